//! Crash tests at the dangerous steps: a failpoint armed with `abort` kills
//! one process of a real cluster exactly there (like kill -9 at that line),
//! the test restarts it and checks the promise: no acknowledged write lost,
//! no partial object visible, a split or merge happened on every store or on
//! none, a store that died applying a snapshot catches up when restarted.
//!
//! Needs a `kura` built with `--features failpoints` (`make test` builds it
//! so); with a binary without it each test says so on stderr and returns.
mod common;
use common::{datanode_metric_sum, meta_leader_component, metric, pattern, wait_until, Cluster};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Starts a cluster; `None` (after saying why) when the binary has no failpoints.
fn start(dev_args: &[&str]) -> Option<Cluster> {
    let c = Cluster::must_start_with(dev_args);
    if c.has_failpoints() {
        Some(c)
    } else {
        eprintln!(
            "SKIPPED: {} was built without `--features failpoints` (GET /fail is 404); \
             `make test` builds it with them",
            common::KURA
        );
        None
    }
}

fn put(c: &Cluster, bucket: &str, key: &str, data: &[u8]) -> bool {
    let f = c.dir.join(format!("put-{key}.tmp"));
    std::fs::write(&f, data).expect("write body");
    let body = f.to_str().expect("utf-8 path");
    c.aws(&[
        "s3api",
        "put-object",
        "--bucket",
        bucket,
        "--key",
        key,
        "--body",
        body,
    ])
    .status
    .success()
}

fn must_read_back(c: &Cluster, bucket: &str, key: &str, data: &[u8]) {
    let f = c.dir.join(format!("get-{key}.tmp"));
    c.must_get_file(bucket, key, &f);
    let got = std::fs::read(&f).expect("read back");
    assert!(got == data, "{key}: {} bytes read back differ", got.len());
}

fn must_be_absent(c: &Cluster, bucket: &str, key: &str) {
    let head = c.aws(&["s3api", "head-object", "--bucket", bucket, "--key", key]);
    assert!(!head.status.success(), "{key} must not be visible");
}

fn listed_keys(c: &Cluster, bucket: &str) -> Vec<String> {
    let out = c.must_aws(&["s3api", "list-objects-v2", "--bucket", bucket]);
    let v: Value = serde_json::from_str(&out).unwrap_or_default();
    v["Contents"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["Key"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The process of `id` logged that failpoint `name` aborted it.
fn must_have_aborted_at(c: &Cluster, id: &str, name: &str) {
    let log =
        std::fs::read_to_string(c.dir.join("logs").join(format!("{id}.log"))).unwrap_or_default();
    assert!(
        log.contains(&format!("failpoint {name}: abort")),
        "{id} did not die at {name}:\n{}",
        c.logs_tail()
    );
}

/// Orphan GC judges a body's age by the data nodes' own clocks (when each
/// stored its fragment), never by the creation time the gateway stamped: a
/// gateway whose clock runs an hour behind, pausing between the stored body
/// and the metadata commit, would otherwise see its body collected as an
/// hour-old orphan by the repair passes that run meanwhile, and acknowledge
/// an object whose fragments are gone.
#[test]
fn a_lagging_gateway_clock_does_not_get_in_flight_bodies_collected() {
    const PASSES: &str = "kura_datanode_repair_passes_total";
    let Some(c) = start(&["--orphan-after-secs", "20", "--repair-interval-secs", "1"]) else {
        return;
    };
    c.must_aws(&["s3", "mb", "s3://skew"]);
    c.must_arm("gateway-1", "gateway::clock_offset_ms", "return(-3600000)");
    // Within the gateway's own commit deadline (half the orphan age, by its
    // monotonic clock), so only the age judgement stands between the body
    // and orphan GC.
    c.must_arm("gateway-1", "gateway::put_before_commit", "1*sleep(8000)");
    let passes_before = datanode_metric_sum(&c, PASSES);
    let data = pattern(3 << 20, 7);
    let started = Instant::now();
    assert!(put(&c, "skew", "in-flight", &data), "{}", c.logs_tail());
    let paused = started.elapsed();
    let passes = datanode_metric_sum(&c, PASSES) - passes_before;
    eprintln!("PUT took {paused:?}; {passes} repair passes ran meanwhile");
    assert!(paused >= Duration::from_secs(8), "the commit was not held");
    // Every node's pass covers the PGs it is primary of: several rounds saw
    // the stored, uncommitted body.
    assert!(
        passes >= 18.0,
        "only {passes} repair passes during the pause"
    );
    must_read_back(&c, "skew", "in-flight", &data);
    assert_eq!(
        datanode_metric_sum(&c, "kura_datanode_orphan_fragments_deleted_total"),
        0.0,
        "an in-flight body was collected as an orphan"
    );
}

/// The gateway dies after the body is on the data nodes but before the
/// metadata commit: the PUT is not acknowledged, no object appears, earlier
/// objects are intact, and orphan GC deletes the body's fragments. It dies
/// after the commit but before answering: the object is there, whole.
#[test]
fn gateway_crash_around_the_metadata_commit() {
    let Some(mut c) = start(&["--orphan-after-secs", "8", "--repair-interval-secs", "2"]) else {
        return;
    };
    c.must_aws(&["s3", "mb", "s3://fpt"]);
    let acked = pattern(3 << 20, 1);
    assert!(put(&c, "fpt", "acked", &acked), "{}", c.logs_tail());

    // Committed, never acknowledged.
    c.must_arm(
        "gateway-1",
        "gateway::put_after_commit_before_respond",
        "abort",
    );
    let committed = pattern(3 << 20, 2);
    assert!(
        !put(&c, "fpt", "committed", &committed),
        "the gateway died before answering"
    );
    c.must_see_dead("gateway-1", 10);
    must_have_aborted_at(&c, "gateway-1", "gateway::put_after_commit_before_respond");
    c.must_restart("gateway-1");
    must_read_back(&c, "fpt", "committed", &committed);

    // Stored, never committed.
    c.must_arm("gateway-1", "gateway::put_before_commit", "abort");
    let lost = pattern(3 << 20, 3);
    assert!(
        !put(&c, "fpt", "lost", &lost),
        "the gateway died before the commit"
    );
    c.must_see_dead("gateway-1", 10);
    must_have_aborted_at(&c, "gateway-1", "gateway::put_before_commit");
    c.must_restart("gateway-1");
    must_be_absent(&c, "fpt", "lost");
    assert_eq!(listed_keys(&c, "fpt"), ["acked", "committed"]);
    must_read_back(&c, "fpt", "acked", &acked);

    // Only the uncommitted body's fragments (one per data node) are orphans.
    wait_until("orphan GC to delete the lost body", 90, &c, || {
        datanode_metric_sum(&c, "kura_datanode_orphan_fragments_deleted_total") >= 6.0
    });
    must_read_back(&c, "fpt", "committed", &committed);
    must_read_back(&c, "fpt", "acked", &acked);
    assert_eq!(
        datanode_metric_sum(&c, "kura_datanode_orphan_fragments_deleted_total"),
        6.0,
        "only the lost body's fragments may be deleted"
    );
}

/// A data node dies with a fragment written but not committed (no footer),
/// then another one with the footer written but not fsynced. Whatever the
/// client was told holds: an acknowledged object reads back whole (also
/// after both nodes restart and recover their segments), an unacknowledged
/// one is either absent or whole.
#[test]
fn datanode_crash_before_a_fragment_is_durable() {
    let Some(mut c) = start(&[]) else {
        return;
    };
    c.must_aws(&["s3", "mb", "s3://fpt"]);
    // The control API: list, disarm, reject what the fail crate cannot parse.
    let status = c.component("datanode-2").status;
    c.must_arm("datanode-2", "datanode::put_before_commit", "panic");
    let listed = common::http_get(&status, "/fail").map(|(_, b)| b);
    assert_eq!(
        listed.as_deref(),
        Some("datanode::put_before_commit=panic\n")
    );
    let fp = "/fail/datanode::put_before_commit";
    assert_eq!(
        common::http_send(&status, "DELETE", fp, "").map(|r| r.0),
        Some(204)
    );
    assert_eq!(
        common::http_get(&status, "/fail"),
        Some((200, String::new()))
    );
    assert_eq!(
        common::http_send(&status, "PUT", fp, "explode").map(|r| r.0),
        Some(400)
    );

    let before = pattern(3 << 20, 10);
    assert!(put(&c, "fpt", "before", &before), "{}", c.logs_tail());

    let mut outcomes = Vec::new();
    for (node, fp, seed) in [
        ("datanode-1", "datanode::put_before_commit", 11),
        ("datanode-3", "datanode::put_before_sync", 12),
    ] {
        c.must_arm(node, fp, "abort");
        let key = format!("at-{node}");
        let data = pattern(3 << 20, seed);
        let ok = put(&c, "fpt", &key, &data);
        eprintln!("PUT {key} with {node} dying at {fp}: acknowledged={ok}");
        c.must_see_dead(node, 10);
        must_have_aborted_at(&c, node, fp);
        outcomes.push((key, data, ok));
    }
    let check = |c: &Cluster| {
        must_read_back(c, "fpt", "before", &before);
        for (key, data, ok) in &outcomes {
            if *ok {
                must_read_back(c, "fpt", key, data);
            } else if c
                .aws(&["s3api", "head-object", "--bucket", "fpt", "--key", key])
                .status
                .success()
            {
                must_read_back(c, "fpt", key, data); // committed, answer lost: whole
            }
        }
    };
    check(&c); // with two of six nodes down: EC reads around them
    c.must_restart("datanode-1");
    c.must_restart("datanode-3");
    check(&c);
    let after = pattern(1 << 20, 13);
    assert!(put(&c, "fpt", "after", &after), "{}", c.logs_tail());
    must_read_back(&c, "fpt", "after", &after);
}

/// `kura pdctl -u PD args…` with a deadline: the operator may fail or hang
/// when the store driving it dies. Returns (succeeded, stdout).
fn pdctl_within(c: &Cluster, secs: u64, args: &[&str]) -> (bool, String) {
    let mut child = c
        .kura_cmd()
        .arg("pdctl")
        .arg("-u")
        .arg(c.pd_url())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pdctl");
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("pdctl output");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            return (out.status.success(), text);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    (false, "timed out".into())
}

/// Waits until PD shows `want` regions that cover the keyspace without
/// gaps, each led, and every store holds exactly `want` regions.
fn must_agree_on_regions(c: &Cluster, want: usize) {
    wait_until(
        &format!("PD and every store to agree on {want} contiguous regions"),
        60,
        c,
        || {
            let v = c.pd_json("/pd/api/v1/regions");
            let regions = v["regions"].as_array().cloned().unwrap_or_default();
            let mut sorted = regions.clone();
            sorted.sort_by(|a, b| {
                let k = |r: &Value| r["start_key"].as_str().unwrap_or_default().to_string();
                // "" is the lowest start key.
                k(a).cmp(&k(b))
            });
            let contiguous = sorted.first().is_some_and(|r| r["start_key"] == "")
                && sorted.last().is_some_and(|r| r["end_key"] == "")
                && sorted
                    .windows(2)
                    .all(|w| w[0]["end_key"] == w[1]["start_key"]);
            let led = sorted.iter().all(|r| r["leader"]["store_id"].is_u64());
            let n = sorted.len();
            let per_store: Vec<Option<f64>> = c
                .components()
                .iter()
                .filter(|x| x.role == "metashard")
                .map(|x| metric(&x.status, "kura_metashard_region_count"))
                .collect();
            n == want && contiguous && led && per_store.iter().all(|k| *k == Some(n as f64))
        },
    );
}

/// The store leading region `id` dies applying its split, then (after the
/// split) the store leading the merge target dies applying the CommitMerge.
/// After each restart every store has the same regions as PD (the step
/// happened on all or on none), the regions tile the keyspace, and every
/// key GETs and LISTs exactly once.
#[test]
fn metashard_crash_applying_split_and_merge() {
    let Some(mut c) = start(&[]) else {
        return;
    };
    c.must_aws(&["s3", "mb", "s3://split"]);
    c.must_python("split_check.py", &["put", "split", "obj", "120"]);
    must_agree_on_regions(&c, 1);
    let parent = c.pd_json("/pd/api/v1/regions")["regions"][0]["id"]
        .as_u64()
        .expect("region id");

    let leader = meta_leader_component(&c);
    c.must_arm(&leader, "metashard::apply_split", "abort");
    let (ok, out) = pdctl_within(
        &c,
        30,
        &["operator", "add", "split-region", &parent.to_string()],
    );
    eprintln!("split with its leader {leader} dying: ok={ok} {out}");
    c.must_see_dead(&leader, 30);
    must_have_aborted_at(&c, &leader, "metashard::apply_split");
    c.must_restart(&leader);
    // The leader applies only committed entries: a majority has the split
    // in its log, a new leader applies it, the restarted store re-applies it.
    must_agree_on_regions(&c, 2);
    c.must_python("split_check.py", &["verify", "split", "obj:120"]);
    c.must_python("split_check.py", &["put", "split", "mid", "30"]);

    let regions = c.pd_json("/pd/api/v1/regions")["regions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (left, right) = if regions[0]["start_key"] == "" {
        (&regions[0], &regions[1])
    } else {
        (&regions[1], &regions[0])
    };
    let (left_id, right_id) = (
        left["id"].as_u64().expect("id"),
        right["id"].as_u64().expect("id"),
    );
    let target_leader = left["leader"]["store_id"].as_u64().expect("leader");
    let victim = c
        .components()
        .into_iter()
        .filter(|x| x.role == "metashard")
        .find(|x| {
            c.pd_json("/pd/api/v1/stores")["stores"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| {
                    s["store"]["id"].as_u64() == Some(target_leader)
                        && s["store"]["address"].as_str() == Some(x.grpc.as_str())
                })
        })
        .expect("target leader component")
        .id;
    c.must_arm(&victim, "metashard::apply_commit_merge", "abort");
    let (ok, out) = pdctl_within(
        &c,
        30,
        &[
            "operator",
            "add",
            "merge-region",
            &right_id.to_string(),
            &left_id.to_string(),
        ],
    );
    eprintln!("merge with the target leader {victim} dying: ok={ok} {out}");
    c.must_see_dead(&victim, 30);
    must_have_aborted_at(&c, &victim, "metashard::apply_commit_merge");
    c.must_restart(&victim);
    // Committed before it was applied, so it happens everywhere.
    must_agree_on_regions(&c, 1);
    c.must_python("split_check.py", &["verify", "split", "obj:120,mid:30"]);
    c.must_python("split_check.py", &["put", "split", "end", "12"]);
    c.must_python(
        "split_check.py",
        &["verify", "split", "obj:120,mid:30,end:12"],
    );

    // The leader dies after applying a write, before answering: the write
    // was committed, so after the restart it is there, whole, answered or not.
    let leader = meta_leader_component(&c);
    c.must_arm(&leader, "metashard::after_apply_before_respond", "abort");
    let data = pattern(64 << 10, 20);
    let ok = put(&c, "split", "applied", &data);
    eprintln!("PUT with the metadata leader {leader} dying after apply: acknowledged={ok}");
    c.must_see_dead(&leader, 30);
    must_have_aborted_at(&c, &leader, "metashard::after_apply_before_respond");
    c.must_restart(&leader);
    must_read_back(&c, "split", "applied", &data);
}

/// A follower dies before applying a committed write; while it is down the
/// others compact their logs past it. Restarted, it dies applying the
/// snapshot it is sent (before anything of it is written); restarted again
/// it applies it, and then, alone with a store that missed later writes, it
/// leads and serves every key.
#[test]
fn metashard_crash_applying_a_snapshot() {
    crash_applying_a_snapshot("metashard::snapshot_apply");
}

/// The same, but the follower dies in the middle of writing the snapshot's
/// data (its new raft state persisted, its range already cleared): restarted,
/// it redoes the apply from the kept snapshot file, and serves every key.
#[test]
fn metashard_crash_in_the_middle_of_a_snapshot_apply() {
    crash_applying_a_snapshot("metashard::snapshot_apply_data");
}

fn crash_applying_a_snapshot(failpoint: &str) {
    let Some(mut c) = start(&["--log-gc-threshold", "10"]) else {
        return;
    };
    c.must_aws(&["s3", "mb", "s3://snap"]);
    c.must_python("split_check.py", &["put", "snap", "a", "30"]);
    let leader = meta_leader_component(&c);
    let mut others = c.ids_of("metashard");
    others.retain(|id| *id != leader);
    let lagger = others.pop().expect("a follower");
    let other = others.pop().expect("another follower");

    c.must_arm(&lagger, "metashard::before_apply", "abort");
    // Far past 4 × --log-gc-threshold: the others compact what the lagger lacks.
    c.must_python("split_check.py", &["put", "snap", "b", "120"]);
    c.must_see_dead(&lagger, 10);
    must_have_aborted_at(&c, &lagger, "metashard::before_apply");

    c.spawn_again(
        &lagger,
        &[],
        &[("KURA_FAILPOINTS", format!("{failpoint}=abort").as_str())],
    );
    let log = c.dir.join("logs").join(format!("{lagger}.log"));
    wait_until(
        &format!("{lagger} to die applying the snapshot"),
        60,
        &c,
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(&format!("failpoint {failpoint}: abort"))
        },
    );
    c.must_see_dead(&lagger, 10);
    c.must_restart(&lagger);
    let status = c.component(&lagger).status;
    wait_until(&format!("{lagger} to apply a snapshot"), 60, &c, || {
        metric(&status, "kura_metashard_snapshots_applied_total").unwrap_or(0.0) >= 1.0
    });

    // Leader down: "c" reaches the lagger and `other` only. `other` down,
    // the old leader back: its log is behind the lagger's, so only the
    // lagger can lead, and every read is served from its state.
    c.must_kill9(&leader);
    c.must_python("split_check.py", &["put", "snap", "c", "20"]);
    c.must_kill9(&other);
    c.must_restart(&leader);
    wait_until(&format!("{lagger} to lead"), 60, &c, || {
        meta_leader_component(&c) == lagger
    });
    c.must_python("split_check.py", &["verify", "snap", "a:30,b:120,c:20"]);
}
