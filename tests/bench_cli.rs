//! `kura bench put|get|mixed|list|stat|delete|multipart|limits|compare`
//! against a real `kura dev` cluster: every load subcommand runs briefly with
//! `--json`, the results parse and show operations without errors, what the
//! bench wrote is checked with the aws CLI, and bad flags exit non-zero with
//! a clear message. Nothing here depends on speed.
mod common;
use common::{Cluster, KURA};

use std::path::Path;
use std::process::{Command, Output};

const BUCKET: &str = "bench-e2e";

/// `kura bench <args>` with the cluster's endpoint and keys as flags and no
/// AWS variables from the environment.
fn bench(c: &Cluster, args: &[&str]) -> Output {
    let mut cmd = Command::new(KURA);
    cmd.arg("bench").args(args);
    for v in [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ] {
        cmd.env_remove(v);
    }
    cmd.args([
        "--endpoint",
        &c.s3,
        "--access-key",
        &c.access_key,
        "--secret-key",
        &c.secret_key,
        "--bucket",
        BUCKET,
        // No dev cluster there: nothing may come from a data dir.
        "--data-dir",
        "/nonexistent-kura-data",
    ]);
    if c.tls {
        cmd.arg("--ca-file").arg(c.ca());
    }
    cmd.output().expect("run kura bench")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a load subcommand (`name` up to a '-') that must succeed; returns
/// its JSON results, kept as `dir/<name>.json`.
fn must_bench(c: &Cluster, dir: &Path, name: &str, args: &[&str]) -> serde_json::Value {
    let json = dir.join(format!("{name}.json"));
    let sub = name.split('-').next().unwrap_or(name);
    let mut all: Vec<&str> = vec![sub];
    all.extend(args);
    let json_s = json.to_string_lossy().into_owned();
    all.extend(["--json", &json_s]);
    let out = bench(c, &all);
    assert!(out.status.success(), "kura bench {args:?}: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| op | ops | ops/s |"), "{}", text(&out));
    assert!(stdout.contains("bench CPU:"), "{}", text(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json parses");
    assert_eq!(v["format"], "kura-bench/1", "{v}");
    v
}

/// The named op's row; asserts it ran and had no errors.
fn op<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let row = v["ops"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["op"] == name))
        .unwrap_or_else(|| panic!("no {name} row in {v}"));
    assert!(row["ops"].as_u64().unwrap_or(0) > 0, "{name}: no ops: {v}");
    assert_eq!(row["errors"], 0, "{name}: errors: {v}");
    assert!(
        row["latency_ms"]["p50"].as_f64().unwrap_or(0.0) > 0.0,
        "{v}"
    );
    assert!(
        row["latency_ms"]["p999"].as_f64() >= row["latency_ms"]["p50"].as_f64(),
        "{v}"
    );
    row
}

/// Keys and total size under `prefix`, as the aws CLI lists them.
fn listed(c: &Cluster, prefix: &str) -> (u64, u64) {
    let out = c.must_aws(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        BUCKET,
        "--prefix",
        prefix,
        "--output",
        "json",
    ]);
    if out.trim().is_empty() {
        return (0, 0);
    }
    let v: serde_json::Value = serde_json::from_str(&out).expect("list json");
    let items = v["Contents"].as_array().cloned().unwrap_or_default();
    let size = items.iter().filter_map(|o| o["Size"].as_u64()).sum();
    (items.len() as u64, size)
}

#[test]
fn bench_subcommands_run_against_a_cluster() {
    let c = Cluster::must_start();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let short = ["--concurrent", "4", "--duration", "2s", "--no-limits"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        short.iter().chain(extra.iter()).copied().collect()
    };

    // PUT, kept under a known prefix: the aws CLI sees exactly what it wrote.
    let put = must_bench(
        &c,
        dir,
        "put",
        &with(&[
            "--obj.size",
            "8KiB",
            "--prefix",
            "kept-put/",
            "--keep",
            "--label",
            "Kura e2e",
        ]),
    );
    let row = op(&put, "PUT");
    let n = row["ops"].as_u64().unwrap_or(0);
    assert_eq!(row["bytes"].as_u64(), Some(n * 8192), "{put}");
    assert_eq!(put["label"], "Kura e2e");
    assert!(
        put["bench_cpu"]["per_request_us"].as_f64().unwrap_or(0.0) > 0.0,
        "{put}"
    );
    assert_eq!(listed(&c, "kept-put/"), (n, n * 8192));

    // Objects larger than one payload slice are streamed with their length.
    let big = must_bench(
        &c,
        dir,
        "put-big",
        &[
            "--concurrent",
            "2",
            "--ops",
            "3",
            "--duration",
            "60s",
            "--no-limits",
            "--obj.size",
            "5MiB",
            "--prefix",
            "kept-big/",
            "--keep",
        ],
    );
    assert_eq!(op(&big, "PUT")["ops"], 3, "{big}");
    assert_eq!(listed(&c, "kept-big/"), (3, 3 * (5 << 20)));

    // GET of prefilled objects of random sizes; without --keep they are gone after.
    let get = must_bench(
        &c,
        dir,
        "get",
        &with(&[
            "--objects",
            "20",
            "--obj.size",
            "64KiB",
            "--obj.randsize",
            "--obj.minsize",
            "1KiB",
            "--prefix",
            "get/",
        ]),
    );
    let row = op(&get, "GET");
    assert!(row["bytes"].as_u64().unwrap_or(0) >= row["ops"].as_u64().unwrap_or(0) * 1024);
    assert!(
        get["object_size"].as_str().unwrap_or("").starts_with("log"),
        "{get}"
    );
    assert_eq!(listed(&c, "get/"), (0, 0), "cleanup left objects");

    let stat = must_bench(&c, dir, "stat", &with(&["--objects", "10"]));
    op(&stat, "STAT");
    // No --label and no Server header: the report names the endpoint's host.
    let host = c.s3.split("://").nth(1).unwrap_or("");
    assert_eq!(stat["label"], host, "{stat}");

    // LIST pages of 10 over 25 keys: every full walk is checked to see all 25.
    let list = must_bench(
        &c,
        dir,
        "list",
        &with(&["--objects", "25", "--max-keys", "10"]),
    );
    assert!(
        op(&list, "LIST")["ops"].as_u64().unwrap_or(0) >= 3,
        "{list}"
    );

    // DELETE stops when the prefilled objects are gone: exactly that many.
    let del = must_bench(
        &c,
        dir,
        "delete",
        &[
            "--concurrent",
            "4",
            "--duration",
            "60s",
            "--no-limits",
            "--objects",
            "30",
            "--prefix",
            "del/",
        ],
    );
    assert_eq!(op(&del, "DELETE")["ops"], 30, "{del}");
    assert_eq!(listed(&c, "del/"), (0, 0));
    // DeleteObjects in batches of 7: every key counts as an op, 25 = 3×7 + 4.
    let pids: Vec<String> = c.components().iter().map(|p| p.pid.to_string()).collect();
    let pids = pids.join(",");
    let batch = must_bench(
        &c,
        dir,
        "delete-batch",
        &[
            "--server-pids",
            &pids,
            "--concurrent",
            "2",
            "--duration",
            "60s",
            "--no-limits",
            "--objects",
            "25",
            "--batch",
            "7",
            "--prefix",
            "delb/",
        ],
    );
    assert_eq!(op(&batch, "DELETE")["ops"], 25, "{batch}");
    assert_eq!(op(&batch, "DELETE")["errors"], 0, "{batch}");
    assert_eq!(listed(&c, "delb/"), (0, 0));
    // --server-pids: the report states the store's own CPU per request.
    assert_eq!(batch["server_cpu"]["roles"][0]["role"], "server", "{batch}");
    assert!(
        batch["server_cpu"]["per_request_us"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{batch}"
    );

    // Mixed: an op budget makes the count exact; every weighted op ran.
    let mixed = must_bench(
        &c,
        dir,
        "mixed",
        &[
            "--concurrent",
            "4",
            "--duration",
            "120s",
            "--ops",
            "300",
            "--no-limits",
            "--objects",
            "30",
            "--obj.size",
            "4KiB",
        ],
    );
    for name in ["GET", "PUT", "STAT", "DELETE"] {
        op(&mixed, name);
    }
    assert_eq!(mixed["total"]["ops"], 300, "{mixed}");

    // Multipart: two uploads of two parts (5 MiB + 1 MiB), checked by size.
    let mp = must_bench(
        &c,
        dir,
        "multipart",
        &[
            "--concurrent",
            "2",
            "--ops",
            "2",
            "--duration",
            "120s",
            "--no-limits",
            "--obj.size",
            "6MiB",
            "--part-size",
            "5MiB",
            "--prefix",
            "mp/",
            "--keep",
        ],
    );
    assert_eq!(op(&mp, "MULTIPART")["ops"], 2, "{mp}");
    assert_eq!(listed(&c, "mp/"), (2, 2 * (6 << 20)));

    // Autoterm ends a run long before its duration once ops/s is stable
    // (±99%: any steady load qualifies), with the progress line on stderr.
    let json = dir.join("auto.json");
    let out = bench(
        &c,
        &[
            "put",
            "--concurrent",
            "2",
            "--duration",
            "120s",
            "--autoterm",
            "--autoterm.dur",
            "2s",
            "--autoterm.pct",
            "99",
            "--obj.size",
            "1KiB",
            "--no-limits",
            "--progress",
            "--json",
            &json.to_string_lossy(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ops/s"),
        "{}",
        text(&out)
    );
    let auto: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("parses");
    assert_eq!(auto["autoterminated"], true, "{auto}");
    assert!(auto["duration_s"].as_f64().unwrap_or(1e9) < 100.0, "{auto}");

    // Limits beside a load run, as ratios (tiny disk sample: not a measurement).
    let lim = must_bench(
        &c,
        dir,
        "put-limits",
        &[
            "--concurrent",
            "2",
            "--duration",
            "1s",
            "--disk-mib",
            "8",
            "--obj.size",
            "4KiB",
        ],
    );
    assert!(
        lim["limits"]["fsync_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{lim}"
    );
    assert!(
        op(&lim, "PUT")["vs_limit"]
            .as_str()
            .unwrap_or("")
            .contains("of fsync rate"),
        "{lim}"
    );

    // limits alone, and compare.
    let out = Command::new(KURA)
        .args(["bench", "limits", "--disk-mib", "8", "--data-dir"])
        .arg(dir)
        .output()
        .expect("limits");
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 KiB write + fdatasync"));
    let out = Command::new(KURA)
        .args(["bench", "compare"])
        .arg(dir.join("put.json"))
        .arg(dir.join("mixed.json"))
        .output()
        .expect("compare");
    assert!(out.status.success(), "{}", text(&out));
    let cmp = String::from_utf8_lossy(&out.stdout);
    for row in [
        "| PUT |",
        "| GET |",
        "| DELETE |",
        "| total |",
        "bench CPU per request",
    ] {
        assert!(cmp.contains(row), "{row}: {cmp}");
    }
    assert!(cmp.contains("×"), "no ratio: {cmp}");

    // Bad input: exit 2 with a message naming the problem.
    std::fs::write(dir.join("junk.json"), "{not json").expect("write");
    let out = Command::new(KURA)
        .args(["bench", "compare"])
        .arg(dir.join("put.json"))
        .arg(dir.join("junk.json"))
        .output()
        .expect("compare");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a kura bench result"));
    for (args, says) in [
        (&["put", "--obj.size", "12XB"][..], "--obj.size"),
        (&["put", "--duration", "0s"][..], "--duration"),
        (&["put", "--concurrent", "0"][..], "--concurrent"),
        (&["put", "--compressibility", "2"][..], "--compressibility"),
        (&["get", "--objects", "0"][..], "--objects"),
        (
            &[
                "mixed", "--get", "0", "--put", "0", "--stat", "0", "--delete", "0",
            ][..],
            "weight",
        ),
        (
            &["multipart", "--part-size", "1KiB", "--obj.size", "1GiB"][..],
            "10,000 parts",
        ),
        (&["put", "--obj.randsize", "zipf"][..], "zipf"),
        (&["put", "--no-such-flag"][..], "--no-such-flag"),
        (&["delete", "--batch", "1001"][..], "--batch"),
    ] {
        let out = bench(&c, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out)
        );
    }
    // Wrong keys: the bucket check fails cleanly (exit 1) before any load.
    let out = Command::new(KURA)
        .args([
            "bench",
            "put",
            "--no-limits",
            "--endpoint",
            &c.s3,
            "--bucket",
            BUCKET,
        ])
        .args(["--access-key", &c.access_key, "--secret-key", "wrong"])
        .args(if c.tls {
            vec![std::ffi::OsString::from("--ca-file"), c.ca().into()]
        } else {
            vec![]
        })
        .output()
        .expect("bench");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        text(&out)
    );
    // No credentials anywhere.
    let out = Command::new(KURA)
        .args(["bench", "put", "--no-limits", "--endpoint", &c.s3])
        .args(["--data-dir", "/nonexistent-kura-data"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("bench");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no credentials"),
        "{}",
        text(&out)
    );

    // `kura bench` without a subcommand still measures the dev cluster; with
    // `--tls` it trusts the CA named in cluster.json.
    let default_bench = |extra: &[&str]| {
        Command::new(KURA)
            .args(["bench", "--data-dir"])
            .arg(&c.dir)
            .args([
                "--sizes",
                "4KiB",
                "--concurrency",
                "2",
                "--seconds",
                "1",
                "--no-limits",
            ])
            .args(extra)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .output()
            .expect("bench")
    };
    let out = default_bench(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("## Kura (") && s.contains("| PUT | 4KiB | 2 |"),
        "{s}"
    );
    // The metadata bench talks to PD's API too (splits, region counts).
    let out = Command::new(KURA)
        .args(["bench", "meta", "--data-dir"])
        .arg(&c.dir)
        .args([
            "--regions",
            "1,2",
            "--seconds",
            "1",
            "--concurrency",
            "2",
            "--split-every-ms",
            "0",
            "--list-objects",
            "300",
            "--load-concurrency",
            "4",
        ])
        .output()
        .expect("bench meta");
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("| full LIST v2, one client") && s.contains("(300 keys"),
        "{s}"
    );
    if c.tls {
        // An explicit endpoint is not the dev cluster's: its CA is not
        // trusted unless given, and the run fails cleanly before any load.
        let out = default_bench(&["--endpoint", &c.s3]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
            "{}",
            text(&out)
        );
        let ca = c.ca().to_string_lossy().into_owned();
        let out = default_bench(&["--endpoint", &c.s3, "--ca-bundle", &ca]);
        assert!(out.status.success(), "{}", text(&out));
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            s.contains(&format!("({})", c.s3.trim_end_matches('/')))
                && s.contains("| GET | 4KiB | 2 |"),
            "{s}"
        );
    }
}
