//! Online region split and merge: `pdctl operator add split-region` cuts the
//! only metadata region in two while a client keeps writing. Both halves
//! serve GET/LIST/PUT, every key lists exactly once across the boundary, no
//! acknowledged write is lost, and the split survives kill -9 of a store.
//! `pdctl operator add merge-region` folds the pieces back, under the same
//! writes, with the same guarantees. A small region under a steady read load
//! splits by itself (split by load).
mod common;
use common::{http_get, metric, Cluster};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Polls `pdctl region` until it lists `n` regions that cover the keyspace
/// without gaps, each with a leader; returns them in key order.
fn must_see_regions(c: &Cluster, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.must_pdctl(&["region"]);
        let regions = v["regions"].as_array().cloned().unwrap_or_default();
        let contiguous = regions.first().is_some_and(|r| r["start_key"] == "")
            && regions.last().is_some_and(|r| r["end_key"] == "")
            && regions
                .windows(2)
                .all(|w| w[0]["end_key"] == w[1]["start_key"]);
        let led = regions.iter().all(|r| r["leader"]["store_id"].is_u64());
        if regions.len() == n && contiguous && led {
            return regions;
        }
        assert!(
            Instant::now() < deadline,
            "PD never showed {n} contiguous led regions: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn split_region_online_under_writes_and_kill9() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://split"]);
    c.must_aws(&["s3", "mb", "s3://wrt"]);
    c.must_python("split_check.py", &["put", "split", "obj", "300"]);
    let before = must_see_regions(&c, 1);
    let parent = before[0]["id"].as_u64().expect("region id");
    let parent_version = before[0]["epoch"]["version"].as_u64().expect("version");

    // A writer runs across the split; its keys (bucket `wrt`, created last)
    // all sort after the split point, i.e. they move to the new region.
    let writer = c.start_writer("wrt", "120");
    writer.wait_acks(10);

    let split = c.must_pdctl(&["operator", "add", "split-region", &parent.to_string()]);
    let halves = split["regions"].as_array().expect("regions");
    assert_eq!(halves.len(), 2, "{split:#}");
    assert_eq!(halves[0]["id"].as_u64(), Some(parent));
    assert_eq!(halves[0]["end_key"], halves[1]["start_key"]);
    for h in halves {
        assert_eq!(h["version"].as_u64(), Some(parent_version + 1), "{split:#}");
    }
    let split_key = halves[1]["start_key"].as_str().expect("key").to_string();
    // The split point is an object prefix: 0x02, bucket id, escaped key, 00 00.
    assert!(
        split_key.starts_with("02") && split_key.ends_with("0000"),
        "{split_key}"
    );

    let regions = must_see_regions(&c, 2);
    let logs = std::fs::read_dir(c.dir.join("logs")).expect("logs");
    for f in logs.flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        for l in text.lines().filter(|l| l.contains("split")) {
            eprintln!("{}: {l}", f.file_name().to_string_lossy());
        }
    }
    assert_eq!(regions[0]["id"].as_u64(), Some(parent));
    assert_eq!(regions[1]["start_key"].as_str(), Some(split_key.as_str()));

    let n = writer.acked();
    writer.wait_acks(n + 20); // writes keep succeeding on the moved keys
    let (summary, _) = writer.finish(&c);
    assert!(
        summary.contains(" 0 failed"),
        "PUTs failed across the split: {summary}"
    );
    c.must_python("split_check.py", &["verify", "split", "obj:300"]);
    c.must_python("split_check.py", &["put", "split", "new", "60"]);
    c.must_python("split_check.py", &["verify", "split", "obj:300,new:60"]);

    // kill -9 the store leading the new region: both regions keep serving
    // on the other two, and the killed store comes back with both.
    let leader_store = regions[1]["leader"]["store_id"].as_u64().expect("leader");
    let victim = c.metashard_by_store(leader_store);
    c.must_kill9(&victim);
    c.must_python("split_check.py", &["put", "split", "down", "30"]);
    c.must_restart(&victim);
    let status = c.component(&victim).status;
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::metric(&status, "kura_metashard_region_count") != Some(2.0) {
        assert!(
            Instant::now() < deadline,
            "{victim} did not load both regions after restart: {:?}",
            http_get(&status, "/metrics")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = must_see_regions(&c, 2);
    assert_eq!(after[1]["start_key"].as_str(), Some(split_key.as_str()));
    c.must_python(
        "split_check.py",
        &["verify", "split", "obj:300,new:60,down:30"],
    );
}

/// Split into three, then merge back to one (right into middle, then the
/// middle into the left) while a writer keeps PUTting into the range that
/// moves: zero failed PUTs, every acknowledged write reads back, every key
/// lists once, the merged region survives kill -9 of a store, and the
/// stores drop the merged-away peers.
#[test]
fn merge_region_online_under_writes_and_kill9() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://split"]);
    c.must_aws(&["s3", "mb", "s3://wrt"]);
    c.must_python("split_check.py", &["put", "split", "obj", "300"]);
    let first = must_see_regions(&c, 1)[0]["id"].as_u64().expect("id");
    let a = c.must_pdctl(&["operator", "add", "split-region", &first.to_string()]);
    let mid = a["regions"][1]["id"].as_u64().expect("new region");
    let b = c.must_pdctl(&["operator", "add", "split-region", &mid.to_string()]);
    let right = b["regions"][1]["id"].as_u64().expect("new region");
    must_see_regions(&c, 3);

    let writer = c.start_writer("wrt", "120");
    writer.wait_acks(10);
    let started = Instant::now();
    let m1 = c.must_pdctl(&[
        "operator",
        "add",
        "merge-region",
        &right.to_string(),
        &mid.to_string(),
    ]);
    assert_eq!(m1["region"]["id"].as_u64(), Some(mid), "{m1:#}");
    assert_eq!(m1["region"]["end_key"], "", "{m1:#}");
    must_see_regions(&c, 2);
    writer.wait_acks(writer.acked() + 10);
    let m2 = c.must_pdctl(&[
        "operator",
        "add",
        "merge-region",
        &mid.to_string(),
        &first.to_string(),
    ]);
    let merged = &m2["region"];
    assert_eq!(merged["id"].as_u64(), Some(first), "{m2:#}");
    assert_eq!(
        (&merged["start_key"], &merged["end_key"]),
        (&"".into(), &"".into())
    );
    eprintln!("two merges under writes took {:?}", started.elapsed());
    let regions = must_see_regions(&c, 1);
    assert_eq!(regions[0]["id"].as_u64(), Some(first));
    // Merging a region into itself or a gone region is refused, non-zero exit.
    let out = c
        .kura_cmd()
        .args(["pdctl", "-u", &c.pd_url()])
        .args([
            "operator",
            "add",
            "merge-region",
            &mid.to_string(),
            &first.to_string(),
        ])
        .output()
        .expect("run pdctl");
    assert!(
        !out.status.success(),
        "merging a merged-away region must fail"
    );

    writer.wait_acks(writer.acked() + 20);
    let (summary, _) = writer.finish(&c);
    assert!(
        summary.contains(" 0 failed"),
        "PUTs failed across merges: {summary}"
    );
    c.must_python("split_check.py", &["verify", "split", "obj:300"]);

    // Every store holds exactly one region peer now, also after kill -9.
    let victim = c.metashard_by_store(regions[0]["leader"]["store_id"].as_u64().expect("leader"));
    c.must_kill9(&victim);
    c.must_python("split_check.py", &["put", "split", "down", "30"]);
    c.must_restart(&victim);
    for x in c.components().into_iter().filter(|x| x.role == "metashard") {
        let deadline = Instant::now() + Duration::from_secs(30);
        while common::metric(&x.status, "kura_metashard_region_count") != Some(1.0) {
            assert!(
                Instant::now() < deadline,
                "{} still has merged-away peers: {:?}",
                x.id,
                http_get(&x.status, "/metrics")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    must_see_regions(&c, 1);
    c.must_python("split_check.py", &["verify", "split", "obj:300,down:30"]);
}

/// The merge checker folds small, quiet neighbours back together once the
/// split-merge interval has passed (3 s here; an hour by default), and every
/// object is still there exactly once.
#[test]
fn small_quiet_neighbours_merge_by_themselves() {
    let c = Cluster::must_start_with(&["--split-merge-interval-secs", "3"]);
    c.must_aws(&["s3", "mb", "s3://auto"]);
    c.must_python("split_check.py", &["put", "auto", "obj", "40"]);
    let first = must_see_regions(&c, 1)[0]["id"].as_u64().expect("id");
    c.must_pdctl(&["operator", "add", "split-region", &first.to_string()]);
    let started = Instant::now();
    must_see_regions(&c, 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.must_pdctl(&["region"])["count"].as_u64() != Some(1) {
        assert!(Instant::now() < deadline, "the two halves never merged");
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "merged back automatically {:?} after the split",
        started.elapsed()
    );
    must_see_regions(&c, 1);
    c.must_python("split_check.py", &["verify", "auto", "obj:40"]);
}

/// A small region that takes a steady read load spread over its objects
/// splits by load (`--region-split-load-qps`, far below the HEAD rate here),
/// though it is far under every size threshold; the reads see no error and
/// every object is still there exactly once afterwards.
#[test]
fn a_busy_region_splits_by_load() {
    let c = Cluster::must_start_with(&["--region-split-load-qps", "60"]);
    c.must_aws(&["s3", "mb", "s3://busy"]);
    c.must_python("split_check.py", &["put", "busy", "obj", "120"]);
    must_see_regions(&c, 1);
    let started = Instant::now();
    let load = c.spawn_python("split_check.py", &["heads", "busy", "obj", "120", "12"]);
    let deadline = Instant::now() + Duration::from_secs(12);
    while c.must_pdctl(&["region"])["count"].as_u64().unwrap_or(0) < 2 {
        assert!(
            Instant::now() < deadline,
            "the busy region never split by load\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "split by load {:?} after the load started",
        started.elapsed()
    );
    let out = load.wait_with_output().expect("wait for the HEAD load");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("0 errors"), "HEAD load failed: {out}");
    eprintln!("{}", out.trim());
    let load_splits: f64 = c
        .ids_of("metashard")
        .iter()
        .filter_map(|id| metric(&c.component(id).status, "kura_metashard_load_splits_total"))
        .sum();
    assert!(load_splits >= 1.0, "no store counted a load split");
    c.must_python("split_check.py", &["verify", "busy", "obj:120"]);
}
