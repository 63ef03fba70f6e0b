//! Leaders that move, on a real `kura dev` cluster (3 metashard stores):
//!
//! 1. The bucket's key range is split into 24 regions (all born with their
//!    leader on one store); PD's balance-leader spreads the leaders until
//!    every store leads 8 ± 2.
//! 2. `pdctl operator add transfer-leader` moves one leader (checked with
//!    `pdctl region ID`); unknown regions/stores fail with a non-zero exit.
//!    `pdctl store weight ID 2 1` makes that store lead about half (12 of
//!    24); back at weight 1 the leaders even out again.
//! 3. Under a steady PUT load, kill -9 the store leading the most regions:
//!    its leaders move to the other two within a few election timeouts
//!    (printed), PUTs go on, and every acknowledged PUT reads back.
//! 4. The store restarts, catches up, and balance-leader gives it its share
//!    of leaders back.
mod common;
use common::{object_prefix_hex, Cluster};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

const REGIONS: usize = 24;

fn pdctl(c: &Cluster, args: &[&str]) -> Output {
    c.kura_cmd()
        .arg("pdctl")
        .arg("-u")
        .arg(c.pd_url())
        .args(args)
        .output()
        .expect("run pdctl")
}

/// Leaders per store id, from the region map (every region must have one).
fn leaders_per_store(c: &Cluster) -> Option<BTreeMap<u64, usize>> {
    let mut counts: BTreeMap<u64, usize> = c.must_pdctl(&["store"])["stores"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["store"]["id"].as_u64())
        .map(|id| (id, 0))
        .collect();
    for r in c.regions() {
        *counts.entry(r["leader"]["store_id"].as_u64()?).or_default() += 1;
    }
    Some(counts)
}

/// Polls until the `n` regions' leaders are spread over the stores in
/// `stores`, each within ±2 of an even share; returns the time it took.
fn must_balance(c: &Cluster, n: usize, stores: usize, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    let share = n / stores;
    let mut last = None;
    loop {
        if let Some(counts) = leaders_per_store(c) {
            let total: usize = counts.values().sum();
            let led: Vec<usize> = counts.values().copied().filter(|&v| v > 0).collect();
            if total == n
                && c.regions().len() == n
                && led.len() == stores
                && led.iter().all(|&v| v.abs_diff(share) <= 2)
            {
                eprintln!("leaders balanced in {:?}: {counts:?}", t0.elapsed());
                return t0.elapsed();
            }
            last = Some(counts);
        }
        assert!(
            t0.elapsed() < timeout,
            "leaders not balanced after {timeout:?}: {last:?}\n{}\n{}",
            String::from_utf8_lossy(&pdctl(c, &["--table", "operator", "show"]).stdout),
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// (region, start time, status) of every operator PD lists that moves a
/// leader to `store`.
fn ops_to_store(c: &Cluster, store: u64) -> Vec<(u64, String, String)> {
    let ops = c.must_pdctl(&["operator", "show"]);
    ["running", "finished"]
        .iter()
        .flat_map(|k| ops[*k].as_array().cloned().unwrap_or_default())
        .filter(|o| o["to_store_id"].as_u64() == Some(store))
        .map(|o| {
            (
                o["region_id"].as_u64().unwrap_or(0),
                o["started_ts"].as_str().unwrap_or("").to_string(),
                o["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn leaders_balance_move_and_survive_kill9_of_the_busiest_store() {
    let mut c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://lbal"]);
    let one = c.dir.join("one");
    std::fs::write(&one, b"x").expect("write");
    c.must_put_file("lbal", "a", &one);

    // Split the only region in the middle (bucket record | object `a`):
    // the split key names the bucket id.
    let (bucket_hex, mut region) = common::bucket_hex_by_split(&c);
    // Then cut the writer's keys (`w/000000`, `w/000001`, ...) every 4 keys.
    for k in 1..=(REGIONS - 2) {
        let at = object_prefix_hex(&bucket_hex, &format!("w/{:06}", k * 4));
        let v = c.must_pdctl(&[
            "operator",
            "add",
            "split-region",
            &region.to_string(),
            "--key",
            &at,
        ]);
        region = v["regions"][1]["id"].as_u64().expect("new region id");
    }

    // 1. balance-leader spreads the new regions' leaders.
    must_balance(&c, REGIONS, 3, Duration::from_secs(120));
    let ops = c.must_pdctl(&["operator", "show"]);
    let by_scheduler = ops["finished"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o["source"] == "balance-leader" && o["status"] == "done")
        .count();
    assert!(by_scheduler > 0, "no balance-leader operator: {ops:#}");
    let scheds = c.must_pdctl(&["scheduler", "show"]);
    assert!(scheduler(&scheds, "balance-leader").is_some(), "{scheds:#}");

    // 2. transfer-leader by hand (the scheduler paused, so that it does not
    // move the leader back before we look).
    let paused = c.must_pdctl(&["scheduler", "pause", "balance-leader"]);
    assert_eq!(
        scheduler(&paused, "balance-leader").map(|s| s["paused"].clone()),
        Some(Value::Bool(true)),
        "{paused:#}"
    );
    // Pausing stops new operators, not one already in flight: a transfer the
    // scheduler started just before would make ours a 409 Conflict.
    common::wait_until("balance-leader's last operator finishes", 30, &c, || {
        let ops = c.must_pdctl(&["operator", "show"]);
        ops["running"].as_array().is_none_or(|a| a.is_empty())
    });
    let r = &c.regions()[REGIONS / 2];
    let rid = r["id"].as_u64().expect("id").to_string();
    let from = r["leader"]["store_id"].as_u64().expect("leader");
    let to = r["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["store_id"].as_u64())
        .find(|s| *s != from)
        .expect("another store");
    let done = c.must_pdctl(&["operator", "add", "transfer-leader", &rid, &to.to_string()]);
    eprintln!("transfer-leader: {done}");
    assert_eq!(done["leader"]["store_id"].as_u64(), Some(to), "{done:#}");
    let shown = c.must_pdctl(&["region", &rid]);
    assert_eq!(shown["leader"]["store_id"].as_u64(), Some(to), "{shown:#}");
    for bad in [
        vec!["operator", "add", "transfer-leader", "999999", "1"],
        vec!["operator", "add", "transfer-leader", &rid, "999"],
    ] {
        let out = pdctl(&c, &bad);
        assert!(!out.status.success(), "{bad:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not found"), "{bad:?}: {err}");
    }
    c.must_pdctl(&["scheduler", "resume", "balance-leader"]);
    must_balance(&c, REGIONS, 3, Duration::from_secs(60));

    // 2b. `store weight`: a store weighing 2 for leaders ends up leading about
    // half of the regions (2 : 1 : 1), and even again at weight 1.
    let heavy = *leaders_per_store(&c)
        .expect("every region led")
        .keys()
        .next()
        .expect("a store");
    let t0 = Instant::now();
    c.must_pdctl(&["store", "weight", &heavy.to_string(), "2", "1"]);
    common::wait_until("the heavier store leads about half", 90, &c, || {
        leaders_per_store(&c)
            .is_some_and(|m| m.get(&heavy).copied().unwrap_or(0) >= REGIONS / 2 - 2)
    });
    eprintln!(
        "store {heavy} at leader weight 2: {:?} after {:?}",
        leaders_per_store(&c),
        t0.elapsed()
    );
    c.must_pdctl(&["store", "weight", &heavy.to_string(), "1", "1"]);
    must_balance(&c, REGIONS, 3, Duration::from_secs(90));

    // 3. kill -9 the store leading the most regions under a PUT load.
    let writer = c.start_writer("lbal", "300");
    writer.wait_acks(10);
    let counts = leaders_per_store(&c).expect("every region led");
    let (&busiest, &led) = counts.iter().max_by_key(|(_, n)| **n).expect("a store");
    let victim = c.metashard_by_store(busiest);
    eprintln!("killing {victim} (store {busiest}, leading {led} regions): {counts:?}");
    let before = writer.acked();
    let ops_before = ops_to_store(&c, busiest);
    eprintln!("operators to store {busiest} so far: {ops_before:?}");
    let t0 = Instant::now();
    c.must_kill9(&victim);
    let moved = loop {
        let rs = c.regions();
        let stuck = rs
            .iter()
            .filter(|r| {
                r["leader"]["store_id"]
                    .as_u64()
                    .is_none_or(|s| s == busiest)
            })
            .count();
        if rs.len() == REGIONS && stuck == 0 {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{stuck} regions still led by the killed store {busiest}\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "all {led} leaders of the killed store moved in {moved:?} \
         (election timeout 1-2 s; PD's map follows the new leaders' first heartbeats)"
    );
    assert!(moved < Duration::from_secs(15), "{moved:?}");
    let at_move = writer.acked();
    writer.wait_acks(at_move + 15);
    eprintln!(
        "PUTs: {} acknowledged between the kill and the last leader move, \
         15 more {:?} after the kill",
        at_move - before,
        t0.elapsed()
    );
    // balance-leader evens out the two live stores (elections split the
    // killed store's leaders at random) and leaves the dead one alone.
    let t2 = Instant::now();
    loop {
        let two = leaders_per_store(&c).expect("every region led");
        assert_eq!(two.get(&busiest).copied().unwrap_or(0), 0, "{two:?}");
        if two
            .iter()
            .filter(|(s, _)| **s != busiest)
            .all(|(_, n)| n.abs_diff(REGIONS / 2) <= 2)
        {
            eprintln!("two live stores balanced {:?} later: {two:?}", t2.elapsed());
            break;
        }
        assert!(
            t2.elapsed() < Duration::from_secs(60),
            "the two live stores never shared the leaders: {two:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The dead store leads nothing but is not a target: PD saw it lose
    // leaders to elections (then its heartbeats stop for 3 s, then 30 s
    // make it Down). Give the scheduler a few more rounds to be sure.
    std::thread::sleep(Duration::from_secs(4));
    let new_ops: Vec<_> = ops_to_store(&c, busiest)
        .into_iter()
        .filter(|o| !ops_before.iter().any(|b| (b.0, &b.1) == (o.0, &o.1)))
        .collect();
    assert!(
        new_ops.is_empty(),
        "operators to the dead store: {new_ops:?}"
    );

    // 4. Restart: it catches up and gets its share back.
    let t1 = Instant::now();
    c.must_restart(&victim);
    let ready = t1.elapsed();
    must_balance(&c, REGIONS, 3, Duration::from_secs(120));
    eprintln!(
        "restarted store ready in {ready:?}, led its share again {:?} after the restart",
        t1.elapsed()
    );
    eprintln!(
        "{}",
        String::from_utf8_lossy(&pdctl(&c, &["--table", "operator", "show"]).stdout)
    );
    let n = writer.acked();
    writer.wait_acks(n + 10);

    writer.finish(&c);
}

/// The entry of scheduler `name` in a `scheduler show` answer.
fn scheduler<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["schedulers"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}
