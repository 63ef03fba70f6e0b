//! Hot regions on a real `kura dev` cluster (3 metashard stores, region
//! heartbeats every 2 s so flow reaches PD quickly):
//!
//! 1. The bucket's objects are split over 4 regions; balance-leader is
//!    paused and every region's leader moved to one store
//!    (`operator add transfer-leader`).
//! 2. Under a HEAD/GET load over all objects, `pdctl region topread` lists
//!    the 4 loaded regions with read flow, the store's status shows it, and
//!    the hot-region scheduler moves leaders until no store leads all 4
//!    (bounded time, zero client errors).
//! 3. Under a PUT load, `pdctl region topwrite` shows written bytes for the
//!    region the PUTs go to.
mod common;
use common::{bucket_hex_by_split, object_prefix_hex, split_at, wait_until, Cluster};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Instant;

const OBJECTS: usize = 80;
/// Object regions start at these objects (`h/00000` .. ).
const REGION_STARTS: [usize; 4] = [0, 20, 40, 60];

/// Ids of the regions starting at the object regions' start keys.
fn object_regions(c: &Cluster, starts: &BTreeSet<String>) -> Vec<u64> {
    c.regions()
        .iter()
        .filter(|r| starts.contains(r["start_key"].as_str().unwrap_or("")))
        .filter_map(|r| r["id"].as_u64())
        .collect()
}

/// Leader store of each region in `ids` (None while one is unknown).
fn leaders_of(c: &Cluster, ids: &[u64]) -> Option<BTreeMap<u64, u64>> {
    ids.iter()
        .map(|id| {
            let r = c.must_pdctl(&["region", &id.to_string()]);
            Some((*id, r["leader"]["store_id"].as_u64()?))
        })
        .collect()
}

/// Regions `pdctl region top{read,write}` lists with non-zero `field`.
fn top(c: &Cluster, cmd: &str, field: &str) -> Vec<(u64, u64)> {
    let v = c.must_pdctl(&["region", cmd]);
    let list = v["regions"].as_array().cloned().unwrap_or_default();
    assert_eq!(v["count"].as_u64(), Some(list.len() as u64), "{v}");
    list.iter()
        .filter_map(|r| Some((r["id"].as_u64()?, r[field].as_u64()?)))
        .filter(|(_, f)| *f > 0)
        .collect()
}

#[test]
fn hot_read_leaders_spread_and_flow_is_listed() {
    let t0 = Instant::now();
    let c = Cluster::must_start_with(&["--region-heartbeat-secs", "2"]);
    c.must_pdctl(&["scheduler", "pause", "balance-leader"]);
    c.must_aws(&["s3", "mb", "s3://hot"]);
    c.must_python("hot_load.py", &["put", "hot", "h/", &OBJECTS.to_string()]);

    // 1. The first split (at the middle of the keys) names the bucket id;
    // then one region per 20 objects, the bucket record apart.
    let (bucket_hex, _) = bucket_hex_by_split(&c);
    let starts: BTreeSet<String> = REGION_STARTS
        .iter()
        .map(|i| object_prefix_hex(&bucket_hex, &format!("h/{i:05}")))
        .collect();
    for hex in &starts {
        split_at(&c, hex);
    }
    let loaded = object_regions(&c, &starts);
    assert_eq!(loaded.len(), REGION_STARTS.len(), "{:?}", c.regions());

    // Every region led by one store.
    let all: Vec<u64> = c
        .regions()
        .iter()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    let mut leaders = None;
    wait_until("every region has a leader", 20, &c, || {
        leaders = leaders_of(&c, &all);
        leaders.is_some()
    });
    let hot_store = leaders.expect("leaders")[&loaded[0]];
    for id in &all {
        let (id, to) = (id.to_string(), hot_store.to_string());
        c.must_pdctl(&["operator", "add", "transfer-leader", &id, &to]);
    }
    let led = leaders_of(&c, &loaded).expect("leaders");
    assert!(led.values().all(|s| *s == hot_store), "{led:?}");
    eprintln!(
        "{} regions, all led by store {hot_store} after {:?}",
        all.len(),
        t0.elapsed()
    );

    // 2. A HEAD/GET load over every object.
    let (status, stop) = (c.dir.join("read-status"), c.dir.join("read-stop"));
    let mut reader = c.spawn_python(
        "hot_load.py",
        &[
            "read",
            "hot",
            "h/",
            &OBJECTS.to_string(),
            status.to_str().expect("utf-8 path"),
            stop.to_str().expect("utf-8 path"),
            "90",
        ],
    );
    let t_load = Instant::now();
    wait_until("region topread lists the loaded regions", 20, &c, || {
        let listed: BTreeSet<u64> = top(&c, "topread", "read_bytes")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        loaded.iter().all(|id| listed.contains(id))
    });
    eprintln!(
        "topread lists the loaded regions after {:?}: {}",
        t_load.elapsed(),
        String::from_utf8_lossy(
            &c.kura_cmd()
                .args(["pdctl", "-u", &c.pd_url(), "--table", "region", "topread"])
                .stderr(Stdio::inherit())
                .output()
                .expect("pdctl")
                .stdout
        )
    );
    // Store heartbeats come on their own period, after the regions' may have.
    wait_until("the hot store's status shows its read flow", 20, &c, || {
        let store = c.must_pdctl(&["store", &hot_store.to_string()]);
        store["status"]["read_keys"].as_u64().unwrap_or(0) > 0
    });

    let mut spread = None;
    wait_until(
        "hot-region spreads the loaded regions' leaders",
        45,
        &c,
        || {
            let led = leaders_of(&c, &loaded);
            let done = led
                .as_ref()
                .is_some_and(|l| l.values().collect::<BTreeSet<_>>().len() > 1);
            if done {
                spread = led;
            }
            done
        },
    );
    eprintln!(
        "leaders spread after {:?} of load: {spread:?}",
        t_load.elapsed()
    );
    let ops = c.must_pdctl(&["operator", "show"]);
    let by_hot_region: Vec<&Value> = ops["finished"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(ops["running"].as_array().into_iter().flatten())
        .filter(|o| o["source"] == "hot-region")
        .collect();
    assert!(!by_hot_region.is_empty(), "hot-region moved them: {ops}");
    let shown = c.must_pdctl(&["scheduler", "show"]);
    assert!(shown.to_string().contains("hot-region"), "{shown}");

    std::fs::write(&stop, b"").expect("stop file");
    let status_of = |p: &std::path::Path| -> Vec<u64> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect()
    };
    let exit = reader.wait().expect("reader exits");
    let mut out = String::new();
    if let Some(mut so) = reader.stdout.take() {
        use std::io::Read;
        let _ = so.read_to_string(&mut out);
    }
    let counts = status_of(&status);
    eprintln!("read load: {counts:?} (ok, errors)");
    assert!(exit.success(), "{out}");
    assert!(counts.len() == 2 && counts[0] > 0, "{counts:?}\n{out}");
    assert_eq!(counts[1], 0, "client errors:\n{out}");

    // 3. PUTs show up in region topwrite, on the region they go to.
    let w_region = c.must_pdctl(&["region", "key", "hot", "w/00000"])["id"]
        .as_u64()
        .expect("region id");
    let mut writer = c.spawn_python("hot_load.py", &["put", "hot", "w/", "3000"]);
    let mut written = Vec::new();
    wait_until("region topwrite shows the PUTs' region", 30, &c, || {
        written = top(&c, "topwrite", "written_bytes");
        written.iter().any(|(id, _)| *id == w_region)
    });
    let _ = writer.kill();
    let _ = writer.wait();
    eprintln!(
        "topwrite (PUTs go to region {w_region}): {written:?}; whole test {:?}",
        t0.elapsed()
    );
}
