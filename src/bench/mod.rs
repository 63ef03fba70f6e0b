//! `kura bench`: PUT and GET throughput and latency of a running cluster at
//! several object sizes and concurrencies, printed beside this machine's own
//! limits (disk, fsync, loopback, MD5) measured in the same run, as ratios.

mod limits;
mod sigv4;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The dev cluster's data dir: credentials and endpoint come from its cluster.json,
    /// and the disk limits are measured there.
    #[arg(long, default_value = "./kura-data")]
    data_dir: PathBuf,
    /// S3 endpoint (default: from cluster.json, else http://127.0.0.1:9000).
    #[arg(long)]
    endpoint: Option<String>,
    /// Object sizes, e.g. 4KiB,64MiB.
    #[arg(long, value_delimiter = ',', default_value = "4KiB,64MiB")]
    sizes: Vec<String>,
    /// Concurrent clients.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Seconds per PUT or GET phase.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// MiB written when measuring the disk.
    #[arg(long, default_value_t = 512)]
    disk_mib: usize,
    /// Skip measuring this machine's limits.
    #[arg(long)]
    no_limits: bool,
}

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix("KiB") {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1024 * 1024)
    } else if let Some(n) = s.strip_suffix("GiB") {
        (n, 1024 * 1024 * 1024)
    } else {
        (s, 1)
    };
    num.trim().parse::<usize>().ok().map(|n| n * mul)
}

fn human(n: usize) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

struct Client {
    http: reqwest::Client,
    endpoint: String,
    host: String,
    signer: sigv4::Signer,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{}", self.endpoint, path));
        for (k, v) in self.signer.headers(method.as_str(), &self.host, path) {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.header("content-length", b.len()).body(b);
        }
        req.send().await.map_err(|e| e.to_string())
    }
}

#[derive(Default)]
struct PhaseResult {
    ops: u64,
    bytes: u64,
    errors: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl PhaseResult {
    fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

async fn phase(
    client: Arc<Client>,
    put: bool,
    size: usize,
    conc: usize,
    secs: u64,
    written: Arc<AtomicU64>,
) -> PhaseResult {
    let body = Bytes::from(vec![0xabu8; size]);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let client = client.clone();
        let body = body.clone();
        let written = written.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = PhaseResult::default();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let outcome = if put {
                    let n = written.fetch_add(1, Ordering::Relaxed);
                    let path = format!("/kura-bench/{}/{n}", human(size));
                    match client
                        .send(reqwest::Method::PUT, &path, Some(body.clone()))
                        .await
                    {
                        Ok(resp) if resp.status().is_success() => Ok(size as u64),
                        Ok(resp) => Err(format!("PUT {}", resp.status())),
                        Err(e) => Err(e),
                    }
                } else {
                    let total = written.load(Ordering::Relaxed).max(1);
                    let n = (w as u64 * 7919 + i) % total;
                    let path = format!("/kura-bench/{}/{n}", human(size));
                    match client.send(reqwest::Method::GET, &path, None).await {
                        Ok(mut resp) if resp.status().is_success() => {
                            let mut got = 0u64;
                            let mut failure = None;
                            loop {
                                match resp.chunk().await {
                                    Ok(Some(c)) => got += c.len() as u64,
                                    Ok(None) => break,
                                    Err(e) => {
                                        failure = Some(format!("GET body: {e}"));
                                        break;
                                    }
                                }
                            }
                            if let Some(e) = failure {
                                Err(e)
                            } else if got == size as u64 {
                                Ok(got)
                            } else {
                                Err(format!("GET returned {got} bytes, expected {size}"))
                            }
                        }
                        Ok(resp) => Err(format!("GET {}", resp.status())),
                        Err(e) => Err(e),
                    }
                };
                i += 1;
                match outcome {
                    Ok(b) => {
                        r.ops += 1;
                        r.bytes += b;
                        r.latencies.push(t.elapsed());
                    }
                    Err(e) => {
                        if r.errors < 3 {
                            eprintln!("bench: {e}");
                        }
                        r.errors += 1;
                    }
                }
            }
            r
        }));
    }
    let mut total = PhaseResult::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.ops += r.ops;
            total.bytes += r.bytes;
            total.errors += r.errors;
            total.latencies.extend(r.latencies);
        }
    }
    total.elapsed = start.elapsed();
    total.latencies.sort();
    total
}

pub fn run(args: BenchArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kura bench: {e}");
            return 1;
        }
    };
    rt.block_on(run_async(args))
}

async fn run_async(args: BenchArgs) -> i32 {
    let cluster: Option<serde_json::Value> = std::fs::read(args.data_dir.join("cluster.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let endpoint = args
        .endpoint
        .clone()
        .or_else(|| {
            cluster
                .as_ref()
                .and_then(|c| c["s3"].as_str().map(String::from))
        })
        .unwrap_or_else(|| "http://127.0.0.1:9000".into());
    let creds = match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(a), Ok(s)) => Some((a, s)),
        _ => crate::dev::load_credentials(&args.data_dir.join("credentials.json"))
            .ok()
            .flatten()
            .map(|c| (c.access_key, c.secret_key)),
    };
    let Some((access_key, secret_key)) = creds else {
        eprintln!("kura bench: no credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --data-dir)");
        return 2;
    };
    let sizes: Vec<usize> = match args
        .sizes
        .iter()
        .map(|s| parse_size(s).ok_or(s.clone()))
        .collect()
    {
        Ok(v) => v,
        Err(bad) => {
            eprintln!("kura bench: bad size {bad:?} (use e.g. 4KiB, 64MiB)");
            return 2;
        }
    };
    let host = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let http = match reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kura bench: {e}");
            return 1;
        }
    };
    let client = Arc::new(Client {
        http,
        endpoint: endpoint.trim_end_matches('/').to_string(),
        host,
        signer: sigv4::Signer {
            access_key,
            secret_key,
            region: "us-east-1".into(),
        },
    });

    let limits = if args.no_limits {
        None
    } else {
        eprintln!(
            "bench: measuring this machine's limits in {} ...",
            args.data_dir.display()
        );
        match limits::measure(&args.data_dir, args.disk_mib) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("kura bench: measuring limits failed: {e}");
                None
            }
        }
    };
    if let Some(l) = limits {
        println!("## Machine limits (same run)");
        println!();
        println!("| limit | value |");
        println!("|---|---|");
        println!(
            "| disk sequential write (1 MiB blocks, fsync at end) | {:.0} MiB/s |",
            l.disk_write_mib_s
        );
        println!("| disk sequential read | {:.0} MiB/s |", l.disk_read_mib_s);
        println!("| 4 KiB write + fdatasync | {:.0} /s |", l.fsync_per_s);
        println!(
            "| loopback TCP, one stream | {:.0} MiB/s |",
            l.loopback_mib_s
        );
        println!("| MD5, one core | {:.0} MiB/s |", l.md5_mib_s);
        println!();
    }

    match client.send(reqwest::Method::PUT, "/kura-bench", None).await {
        Ok(r) if r.status().is_success() || r.status().as_u16() == 409 => {}
        Ok(r) => {
            eprintln!(
                "kura bench: creating bucket kura-bench: HTTP {}",
                r.status()
            );
            return 1;
        }
        Err(e) => {
            eprintln!("kura bench: cannot reach {endpoint}: {e}");
            return 1;
        }
    }

    println!("## Kura ({endpoint}), {} s per phase", args.seconds);
    println!();
    println!("| op | size | conc | ops/s | MiB/s | p50 ms | p99 ms | errors | vs limit |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for &size in &sizes {
        for &conc in &args.concurrency {
            let written = Arc::new(AtomicU64::new(0));
            for put in [true, false] {
                let r = phase(
                    client.clone(),
                    put,
                    size,
                    conc,
                    args.seconds,
                    written.clone(),
                )
                .await;
                let secs = r.elapsed.as_secs_f64();
                let mibs = r.bytes as f64 / (1024.0 * 1024.0) / secs;
                let ratio = limits
                    .map(|l| {
                        if put && size >= 1 << 20 {
                            format!(
                                "{:.2} of disk write ({:.2} with 3 replicas on one disk)",
                                mibs / l.disk_write_mib_s,
                                3.0 * mibs / l.disk_write_mib_s
                            )
                        } else if put {
                            format!("{:.2} of fsync rate", r.ops as f64 / secs / l.fsync_per_s)
                        } else if size >= 1 << 20 {
                            format!("{:.2} of loopback", mibs / l.loopback_mib_s)
                        } else {
                            String::new()
                        }
                    })
                    .unwrap_or_default();
                println!(
                    "| {} | {} | {conc} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {ratio} |",
                    if put { "PUT" } else { "GET" },
                    human(size),
                    r.ops as f64 / secs,
                    mibs,
                    r.pct(0.50).as_secs_f64() * 1000.0,
                    r.pct(0.99).as_secs_f64() * 1000.0,
                    r.errors,
                );
                failed |= r.errors > 0;
            }
            // Clean up this scenario's objects so runs don't fill the disk.
            let n = written.load(Ordering::Relaxed);
            use futures::StreamExt;
            futures::stream::iter(0..n)
                .map(|i| {
                    let client = client.clone();
                    let path = format!("/kura-bench/{}/{i}", human(size));
                    async move { client.send(reqwest::Method::DELETE, &path, None).await }
                })
                .buffer_unordered(16)
                .for_each(|_| async {})
                .await;
        }
    }
    if failed {
        1
    } else {
        0
    }
}
