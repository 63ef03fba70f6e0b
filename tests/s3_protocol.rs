//! The wire protocol and the operating contract of a real cluster:
//! hand-signed SigV4 streaming uploads (tests/py/sigv4_streaming.py), the
//! shape of `cluster.json`, every process's status endpoints, and the
//! gateway's `/_kura/health` following metadata availability.
mod common;
use common::{http_get, http_status, Cluster};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// aws-chunked signed chunks, tampered chunk signatures, unsigned and signed
/// trailers with CRC32, Content-MD5 and clock skew, byte-exact round trips.
#[test]
fn sigv4_streaming_chunks_trailers_md5_and_skew() {
    let c = Cluster::must_start();
    let out = c.must_python("sigv4_streaming.py", &[]);
    assert!(out.contains("all checks passed"), "{out}");
    // Deviations from AWS that the script tolerates are printed; keep them visible.
    for line in out.lines().filter(|l| l.contains("KNOWN DEVIATION")) {
        eprintln!("{line}");
    }
}

/// Polls `GET /_kura/health` on the S3 port until it answers `want`.
fn must_health_become(c: &Cluster, want: u16, timeout: Duration) -> Duration {
    let addr = format!("127.0.0.1:{}", c.port);
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < timeout {
        last = c.s3_health(&addr);
        if last == Some(want) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "/_kura/health never answered {want} within {timeout:?} (last: {last:?})\n{}",
        c.logs_tail()
    );
}

/// cluster.json lists every process with what operators need; every process
/// serves /health, /ready and Prometheus /metrics; `/_kura/health` goes 503
/// when no metadata store is alive, or when data nodes of two zones are down,
/// and 200 again once they are back, with data intact.
#[test]
fn operating_contract_status_endpoints_and_health() {
    let mut c = Cluster::must_start();

    // --- cluster.json
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.dir.join("cluster.json")).expect("cluster.json"))
            .expect("cluster.json is JSON");
    let comps = file["components"].as_array().expect("components array");
    assert_eq!(comps.len(), 11, "components: {comps:#?}");
    for comp in comps {
        for field in [
            "role", "id", "zone", "grpc", "status", "pid", "data_dir", "argv",
        ] {
            assert!(
                comp.get(field).is_some(),
                "component lacks {field}: {comp:#}"
            );
        }
        assert!(comp["pid"].as_u64().unwrap_or(0) > 0, "no pid: {comp:#}");
        let argv = comp["argv"].as_array().expect("argv array");
        assert!(
            argv.len() > 1 && argv.iter().all(|a| a.is_string()),
            "argv: {comp:#}"
        );
        let dir = comp["data_dir"].as_str().expect("data_dir string");
        assert!(
            std::path::Path::new(dir).is_dir(),
            "data_dir missing: {comp:#}"
        );
    }
    let count = |role: &str| comps.iter().filter(|x| x["role"] == role).count();
    assert_eq!(
        (
            count("pd"),
            count("metashard"),
            count("datanode"),
            count("gateway")
        ),
        (1, 3, 6, 1),
        "roles"
    );
    let pd = comps.iter().find(|x| x["role"] == "pd").expect("pd");
    let pd_http = pd["http"].as_str().expect("pd has http");
    assert_eq!(
        c.pd_send(pd_http, "GET", "/pd/api/v1/stores", "")
            .map(|(s, _)| s),
        Some(200),
        "PD HTTP API at {pd_http}"
    );
    if !c.tls {
        // Without a credential PD's API answers nothing but its health.
        assert_eq!(
            http_get(pd_http, "/pd/api/v1/stores").map(|(s, _)| s),
            Some(401),
            "PD HTTP API without a token"
        );
        assert_eq!(
            http_get(pd_http, "/pd/api/v1/health").map(|(s, _)| s),
            Some(200),
            "PD health without a token"
        );
    }
    let mut zones: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for comp in comps {
        let z = comp["zone"].as_str().unwrap_or_default().to_string();
        match comp["role"].as_str() {
            Some("metashard") => zones.entry(z).or_default().0 += 1,
            Some("datanode") => zones.entry(z).or_default().1 += 1,
            _ => {}
        }
    }
    let want: BTreeMap<String, (usize, usize)> = ["z1", "z2", "z3"]
        .iter()
        .map(|z| (z.to_string(), (1, 2)))
        .collect();
    assert_eq!(zones, want, "zone -> (metashards, datanodes)");
    let ids: std::collections::BTreeSet<_> = comps.iter().map(|x| x["id"].to_string()).collect();
    assert_eq!(ids.len(), comps.len(), "ids are unique");

    // --- status endpoints of every process
    for comp in c.components() {
        for path in ["/health", "/ready"] {
            assert_eq!(
                http_status(&comp.status, path),
                Some(200),
                "{} {}{path}",
                comp.id,
                comp.status
            );
        }
        let (status, body) = http_get(&comp.status, "/metrics")
            .unwrap_or_else(|| panic!("{} /metrics did not answer", comp.id));
        assert_eq!(status, 200, "{} /metrics", comp.id);
        let has_kura_sample = body
            .lines()
            .any(|l| l.starts_with("kura_") && l.split_whitespace().count() >= 2);
        assert!(
            has_kura_sample && body.contains("# TYPE kura_"),
            "{} /metrics has no kura_ metric:\n{}",
            comp.id,
            &body[..body.len().min(2000)]
        );
    }
    let s3_addr = format!("127.0.0.1:{}", c.port);
    assert_eq!(c.s3_health(&s3_addr), Some(200));

    // --- /_kura/health follows metadata availability
    let obj = c.dir.join("obj");
    let data = common::pattern(100_000, 7);
    std::fs::write(&obj, &data).unwrap();
    c.must_aws(&["s3", "mb", "s3://contract"]);
    c.must_put_file("contract", "before", &obj);
    let stores = c.ids_of("metashard");
    for id in &stores {
        c.must_kill9(id);
    }
    let took = must_health_become(&c, 503, Duration::from_secs(15));
    eprintln!("/_kura/health went 503 {took:?} after the last store died");
    for id in &stores {
        c.must_restart(id);
    }
    let took = must_health_become(&c, 200, Duration::from_secs(60));
    eprintln!("/_kura/health back to 200 {took:?} after the stores restarted");
    let back = c.dir.join("back");
    c.must_get_file("contract", "before", &back);
    assert_eq!(std::fs::read(&back).unwrap(), data, "object after restart");

    // --- /_kura/health follows data-node availability: with both data nodes
    // of one zone gone every group keeps 2 of 3 replicas (still writable);
    // with a second zone gone no group has a write quorum.
    for id in ["datanode-1", "datanode-2"] {
        c.must_kill9(id);
    }
    must_health_become(&c, 200, Duration::from_secs(10));
    c.must_put_file("contract", "one-zone-down", &obj);
    for id in ["datanode-3", "datanode-4"] {
        c.must_kill9(id);
    }
    let took = must_health_become(&c, 503, Duration::from_secs(15));
    eprintln!("/_kura/health went 503 {took:?} after two zones of data nodes died");
    for id in ["datanode-1", "datanode-2", "datanode-3", "datanode-4"] {
        c.must_restart(id);
    }
    must_health_become(&c, 200, Duration::from_secs(30));
}
