//! Many regions and automatic splits on a real `kura dev` cluster.
//!
//! - `auto_split_by_key_count`: with a low `--region-split-keys`, writes
//!   alone split the keyspace; the cut is the bucket boundary; every
//!   object stays readable and listed exactly once; PD shows key counts.
//! - `many_regions_fast` (200 regions) and `many_regions_1000` (`#[ignore]`,
//!   1,000+ regions): a bucket's key range is cut by the `split-region`
//!   operator (many keys at once) so each region holds one object; PD lists
//!   every region with a leader, `/_kura/health` is 200, PUT/GET/LIST work
//!   across all of them, and the idle cluster's CPU is measured and bounded.
mod common;
use common::{object_prefix_hex, Cluster};
use serde_json::Value;
use std::time::{Duration, Instant};

fn pd_http(c: &Cluster) -> String {
    let cluster: Value =
        serde_json::from_slice(&std::fs::read(c.dir.join("cluster.json")).expect("cluster.json"))
            .expect("json");
    cluster["components"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["role"] == "pd"))
        .and_then(|x| x["http"].as_str())
        .expect("pd http")
        .to_string()
}

/// `POST {path}` to PD's HTTP API with a JSON body and the admin
/// credentials, waiting as long as PD takes → (status, body).
fn http_post(c: &Cluster, path: &str, body: &str) -> (u16, String) {
    c.pd_send_waiting(&pd_http(c), "POST", path, body, Duration::from_secs(300))
        .expect("PD answers")
}

fn regions(c: &Cluster) -> Vec<Value> {
    let (code, body) = c
        .pd_send(&pd_http(c), "GET", "/pd/api/v1/regions", "")
        .expect("PD regions");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("regions JSON");
    v["regions"].as_array().cloned().unwrap_or_default()
}

/// Polls until PD lists at least `n` regions covering the keyspace without
/// gaps, each with a leader; returns them in key order.
fn must_see_regions(c: &Cluster, n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let rs = regions(c);
        let contiguous = rs.first().is_some_and(|r| r["start_key"] == "")
            && rs.last().is_some_and(|r| r["end_key"] == "")
            && rs.windows(2).all(|w| w[0]["end_key"] == w[1]["start_key"]);
        let led = rs.iter().all(|r| r["leader"]["store_id"].is_u64());
        if rs.len() >= n && contiguous && led {
            return rs;
        }
        assert!(
            Instant::now() < deadline,
            "PD never showed {n} contiguous led regions: {} listed, contiguous {contiguous}, led {led}",
            rs.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `pdctl region` (the CLI, not only the HTTP API) lists `n` regions.
fn must_pdctl_count(c: &Cluster, n: usize) {
    let out = c.must_run_kura(&["pdctl", "-u", &c.pd_url(), "region"]);
    let v: Value = serde_json::from_str(&out).expect("pdctl JSON");
    let listed = v["regions"].as_array().map(|a| a.len()).unwrap_or(0);
    assert!(listed >= n, "pdctl region lists {listed}, want {n}");
}

/// Splits the only region in the middle while it holds one bucket record and
/// one object (`a00000`), and reads the bucket id out of the split key
/// (`02 <bucket id> enc(a00000)`). Returns (bucket id hex, id of the region
/// holding every key from `a00000` on).
fn bucket_id_by_split(c: &Cluster) -> (String, u64) {
    let rs = must_see_regions(c, 1, Duration::from_secs(30));
    let (code, body) = http_post(
        c,
        "/pd/api/v1/operators",
        &format!(
            r#"{{"name":"split-region","region_id":{}}}"#,
            rs[0]["id"].as_u64().expect("id")
        ),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("operator JSON");
    let right = &v["regions"][1];
    let key = right["start_key"].as_str().expect("split key");
    assert!(key.starts_with("02") && key.len() > 18, "{key}");
    (key[2..18].to_string(), right["id"].as_u64().expect("id"))
}

/// Cuts the bucket's objects `k00001..k{n-1}` into one region each, in
/// operator calls of 200 keys. Returns the time the splits took.
fn split_per_object(c: &Cluster, bucket_hex: &str, mut region: u64, n: usize) -> Duration {
    let t0 = Instant::now();
    let keys: Vec<String> = (1..n)
        .map(|i| object_prefix_hex(bucket_hex, &format!("k{i:05}")))
        .collect();
    for chunk in keys.chunks(200) {
        let list: Vec<String> = chunk.iter().map(|k| format!("\"{k}\"")).collect();
        let (code, body) = http_post(
            c,
            "/pd/api/v1/operators",
            &format!(
                r#"{{"name":"split-region","region_id":{region},"keys":[{}]}}"#,
                list.join(",")
            ),
        );
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("operator JSON");
        let rs = v["regions"].as_array().expect("regions");
        assert_eq!(rs.len(), chunk.len() + 1, "{body}");
        region = rs.last().and_then(|r| r["id"].as_u64()).expect("last id");
    }
    t0.elapsed()
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field overall, the 12th after ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Average CPU (in cores) of each role while the cluster sits idle for `d`.
fn idle_cpu(c: &Cluster, d: Duration) -> Vec<(String, f64)> {
    let comps = c.components();
    let before: Vec<f64> = comps.iter().map(|x| cpu_secs(x.pid)).collect();
    std::thread::sleep(d);
    comps
        .iter()
        .zip(before)
        .map(|(x, b)| (x.id.clone(), (cpu_secs(x.pid) - b) / d.as_secs_f64()))
        .collect()
}

fn many_regions(n: usize, max_idle_metashard_cores: f64) {
    let c = Cluster::must_start();
    c.must_aws(&["s3", "mb", "s3://many"]);
    c.must_python("many_puts.py", &["put", "many", "a", "1"]);
    let (bucket_hex, region) = bucket_id_by_split(&c);
    let t0 = Instant::now();
    c.must_python("many_puts.py", &["put", "many", "k", &n.to_string()]);
    eprintln!("{n} PUTs in {:?}", t0.elapsed());
    let took = split_per_object(&c, &bucket_hex, region, n);
    eprintln!("{} splits by operator in {took:?}", n - 1);
    // Bucket record | a00000, k00000 | k00001 | ... | k{n-1}: n + 1 regions.
    let rs = must_see_regions(&c, n + 1, Duration::from_secs(120));
    must_pdctl_count(&c, n + 1);
    eprintln!("PD lists {} regions", rs.len());
    let code = c
        .s3_health(&format!("127.0.0.1:{}", c.port))
        .expect("health");
    assert_eq!(code, 200);
    // Every store hosts every region.
    for m in c.components().iter().filter(|x| x.role == "metashard") {
        let deadline = Instant::now() + Duration::from_secs(60);
        while common::metric(&m.status, "kura_metashard_region_count")
            .is_none_or(|v| (v as usize) < n + 1)
        {
            assert!(Instant::now() < deadline, "{} lacks regions", m.id);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let t0 = Instant::now();
    let out = c.must_python("many_puts.py", &["verify", "many", "k", &n.to_string()]);
    eprintln!("verify across {n} regions: {}({:?})", out, t0.elapsed());
    // Overwrite every object: each PUT lands in its own region.
    let t0 = Instant::now();
    c.must_python("many_puts.py", &["put", "many", "k", &n.to_string()]);
    eprintln!("{n} PUTs across {n} regions in {:?}", t0.elapsed());
    c.must_python("many_puts.py", &["verify", "many", "k", &n.to_string()]);

    // Idle: let elections and heartbeats settle, then measure.
    std::thread::sleep(Duration::from_secs(3));
    let cpu = idle_cpu(&c, Duration::from_secs(10));
    let mut total = 0.0;
    for (id, cores) in &cpu {
        eprintln!("idle CPU {id}: {:.1}%", cores * 100.0);
        total += cores;
        if id.starts_with("metashard") {
            assert!(
                *cores < max_idle_metashard_cores,
                "{id} uses {:.0}% CPU idle with {n} regions",
                cores * 100.0
            );
        }
    }
    eprintln!(
        "idle CPU total with {} regions: {:.1}%",
        rs.len(),
        total * 100.0
    );
    let code = c
        .s3_health(&format!("127.0.0.1:{}", c.port))
        .expect("health");
    assert_eq!(code, 200);
}

#[test]
fn many_regions_fast() {
    many_regions(200, 0.5);
}

/// 1,000+ regions; a few minutes on a 2-core box, hence ignored by default:
/// `cargo test --test many_regions -- --ignored`.
#[test]
#[ignore]
fn many_regions_1000() {
    many_regions(1000, 0.6);
}

#[test]
fn auto_split_by_key_count() {
    let c = Cluster::must_start_with(&[
        "--region-split-keys",
        "1000",
        "--region-split-min-keys",
        "50",
        "--region-split-interval-secs",
        "1",
    ]);
    c.must_aws(&["s3", "mb", "s3://first"]);
    c.must_aws(&["s3", "mb", "s3://second"]);
    c.must_python("split_check.py", &["put", "first", "a", "500"]);
    c.must_python("split_check.py", &["put", "second", "b", "700"]);
    // 1,202 keys (two bucket records) over a 1,000-key threshold: a split,
    // and both buckets' boundary lies in the middle half, so it is the cut.
    let rs = must_see_regions(&c, 2, Duration::from_secs(60));
    let keys: Vec<&str> = rs
        .iter()
        .skip(1)
        .filter_map(|r| r["start_key"].as_str())
        .collect();
    eprintln!("split keys: {keys:?}");
    // The cut: between the two buckets (a bucket prefix: 02 + 8 bytes).
    assert!(
        keys.iter().any(|k| k.len() == 18 && k.starts_with("02")),
        "no split at a bucket boundary: {keys:?}"
    );
    c.must_python("split_check.py", &["verify", "first", "a:500"]);
    c.must_python("split_check.py", &["verify", "second", "b:700"]);
    // PD learns each region's key count from its leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rs = regions(&c);
        let total: u64 = rs
            .iter()
            .filter_map(|r| r["approximate_keys"].as_u64())
            .sum();
        if total >= 1200
            && rs
                .iter()
                .all(|r| r["approximate_keys"].as_u64() < Some(800))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PD key counts: {:?}",
            rs.iter()
                .map(|r| r["approximate_keys"].clone())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
