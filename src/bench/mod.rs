//! `kura bench`: PUT and GET throughput and latency of a running cluster at
//! several object sizes and concurrencies, printed beside this machine's own
//! limits (disk, fsync, loopback, MD5) measured in the same run, as ratios,
//! with the storage amplification each PUT phase caused on the data nodes'
//! disks. `kura bench ec` measures the erasure codec alone (`codec.rs`);
//! `kura bench put|get|mixed|...` load any S3 endpoint (`load.rs`).

mod codec;
mod cpu;
mod disk_usage;
mod limits;
mod list_versions;
mod load;
mod meta;
mod payload;
mod pd;
mod report;
pub(crate) mod sigv4;
mod store_cpu;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Option<BenchWhat>,
    #[command(flatten)]
    s3: S3Args,
}

#[derive(Debug, clap::Subcommand)]
enum BenchWhat {
    /// Erasure codec alone: encode / reconstruct MiB/s per core for EC_4_2, EC_8_3 and
    /// REPLICA3 on the gateway's stripes, beside MD5 and CRC32C (no cluster needed).
    Ec(codec::EcArgs),
    /// Metadata operations per second (PUT 0 B / 1 KiB, HEAD, LIST of 1,000 keys) with the
    /// bench bucket in 1 and in 64 regions, and keys/s listing one big bucket.
    Meta(meta::MetaArgs),
    /// Full ListObjectsV2 of N keys in an unversioned bucket vs the same keys with M versions
    /// each in a versioned one: time and keys the stores read, beside a RocksDB floor.
    ListVersions(list_versions::ListVersionsArgs),
    /// PD's scheduling logic at scale, no cluster needed: region heartbeats
    /// per second on one core at 100,000 regions, beside the machine's floor.
    Pd(pd::PdArgs),
    /// Load any S3 endpoint with PUTs of new objects.
    Put(load::LoadArgs),
    /// GETs of --objects prefilled objects (each read whole, its length checked).
    Get(load::LoadArgs),
    /// A weighted mix of GET, PUT, STAT (HEAD) and DELETE on a prefilled pool.
    Mixed(MixedArgs),
    /// ListObjectsV2 pages over --objects prefilled keys; every full walk is checked.
    List(ListArgs),
    /// HEADs of prefilled objects.
    Stat(load::LoadArgs),
    /// DELETEs of prefilled objects, or DeleteObjects of --batch keys (the run
    /// ends when none are left).
    Delete(DeleteArgs),
    /// Whole multipart uploads (create, parts, complete) of --obj.size objects.
    Multipart(MultipartArgs),
    /// This machine's limits alone: disk write/read, fsync rate, loopback TCP, MD5.
    Limits(LimitsArgs),
    /// Compare two `--json` results: per-operation figures of b beside a, with ratios.
    Compare(CompareArgs),
}

#[derive(Debug, clap::Args)]
struct MixedArgs {
    #[command(flatten)]
    load: load::LoadArgs,
    /// Weight of GET.
    #[arg(long, default_value_t = 45)]
    get: u32,
    /// Weight of PUT.
    #[arg(long, default_value_t = 15)]
    put: u32,
    /// Weight of STAT (HEAD).
    #[arg(long, default_value_t = 30)]
    stat: u32,
    /// Weight of DELETE.
    #[arg(long, default_value_t = 10)]
    delete: u32,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    #[command(flatten)]
    load: load::LoadArgs,
    /// Keys per ListObjectsV2 page.
    #[arg(long, default_value_t = 1000)]
    max_keys: u32,
}

#[derive(Debug, clap::Args)]
struct DeleteArgs {
    #[command(flatten)]
    load: load::LoadArgs,
    /// Keys per request: 1 sends DeleteObject, more send DeleteObjects (at most
    /// 1000) and count every key deleted as one op, as warp's `--batch` does.
    #[arg(long, default_value_t = 1)]
    batch: u32,
}

#[derive(Debug, clap::Args)]
struct MultipartArgs {
    #[command(flatten)]
    load: load::LoadArgs,
    /// Size of every part but the last (S3 needs at least 5 MiB).
    #[arg(long, default_value = "5MiB")]
    part_size: String,
}

#[derive(Debug, clap::Args)]
struct LimitsArgs {
    /// Where the disk is measured (the disk the store uses).
    #[arg(long, default_value = "./kura-data")]
    data_dir: PathBuf,
    /// MiB written when measuring the disk.
    #[arg(long, default_value_t = 512)]
    disk_mib: usize,
}

#[derive(Debug, clap::Args)]
struct CompareArgs {
    /// The baseline result (`--json` of a load run).
    a: PathBuf,
    /// The result compared with it.
    b: PathBuf,
}

/// Without a subcommand, `kura bench` runs PUT then GET phases against a running
/// cluster for every size × concurrency, deleting each scenario's objects after it.
#[derive(Debug, clap::Args)]
struct S3Args {
    /// The dev cluster's data dir: credentials and endpoint come from its cluster.json,
    /// and the disk limits are measured there.
    #[arg(long, default_value = "./kura-data")]
    data_dir: PathBuf,
    /// S3 endpoint (default: from cluster.json, else http://127.0.0.1:9000).
    #[arg(long)]
    endpoint: Option<String>,
    /// CA certificate (PEM) to trust for an https:// endpoint [default: the
    /// `tls.ca` of --data-dir's cluster.json (`kura dev --tls`), else the system's]
    #[arg(long, visible_alias = "ca-bundle", value_name = "PEM")]
    ca_file: Option<PathBuf>,
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
    /// Storage class sent with every PUT (x-amz-storage-class): EC_4_2 (= STANDARD),
    /// EC_8_3 (= STANDARD_IA), REPLICA3 (= REDUCED_REDUNDANCY). Default: the bucket's.
    #[arg(long)]
    storage_class: Option<String>,
    /// A PUT phase stops starting requests once it has written this many GiB, so one
    /// run cannot fill the disk (data nodes reclaim deleted bytes only by compaction).
    #[arg(long, default_value_t = 4.0)]
    max_phase_gib: f64,
    /// Name of the store in the report [default: the Server header, else
    /// "Kura" for the dev cluster, else the endpoint's host].
    #[arg(long)]
    label: Option<String>,
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
    /// A request to `path` (with its query, if any) carrying the SigV4 headers.
    fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{}", self.endpoint, path));
        // A query string must come in canonical form (sorted, URI-safe).
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        for (k, v) in self
            .signer
            .headers_with_query(method.as_str(), &self.host, p, q, extra)
        {
            req = req.header(k, v);
        }
        req
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Bytes>,
        extra: &[(&str, &str)],
    ) -> Result<reqwest::Response, String> {
        let mut req = self.signed(method, path, extra);
        if let Some(b) = body {
            req = req.header("content-length", b.len()).body(b);
        }
        req.send().await.map_err(|e| e.to_string())
    }

    /// A signed request with a body of `len` bytes (streamed if large).
    async fn send_body(
        &self,
        method: reqwest::Method,
        path: &str,
        body: reqwest::Body,
        len: u64,
        extra: &[(&str, &str)],
    ) -> Result<reqwest::Response, String> {
        self.signed(method, path, extra)
            .header("content-length", len)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())
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

/// What one PUT or GET phase does.
#[derive(Clone)]
struct PhaseSpec {
    put: bool,
    size: usize,
    conc: usize,
    secs: u64,
    /// Object keys are `{prefix}/{n}`.
    prefix: Arc<str>,
    /// x-amz-storage-class sent with each PUT.
    class: Option<Arc<str>>,
    /// A PUT phase starts no request numbered past this.
    max_objects: u64,
}

async fn phase(client: Arc<Client>, spec: PhaseSpec, written: Arc<AtomicU64>) -> PhaseResult {
    let size = spec.size;
    // Random bytes: a store that compresses must not look faster than it is.
    let body = payload::Payload::new(0.0);
    let deadline = Instant::now() + Duration::from_secs(spec.secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..spec.conc {
        let client = client.clone();
        let body = body.clone();
        let written = written.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = PhaseResult::default();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let outcome = if spec.put {
                    let n = written.fetch_add(1, Ordering::Relaxed);
                    if n >= spec.max_objects {
                        // The cap is reached: hand the number back (so GET and
                        // cleanup see only objects that exist) and stop.
                        written.fetch_sub(1, Ordering::Relaxed);
                        break;
                    }
                    let path = format!("{}/{n}", spec.prefix);
                    let extra: Vec<(&str, &str)> = spec
                        .class
                        .as_deref()
                        .map(|c| ("x-amz-storage-class", c))
                        .into_iter()
                        .collect();
                    match client
                        .send_body(
                            reqwest::Method::PUT,
                            &path,
                            body.body(size as u64),
                            size as u64,
                            &extra,
                        )
                        .await
                    {
                        Ok(resp) if resp.status().is_success() => Ok(size as u64),
                        Ok(resp) => Err(format!("PUT {}", resp.status())),
                        Err(e) => Err(e),
                    }
                } else {
                    let total = written.load(Ordering::Relaxed).max(1);
                    let n = (w as u64 * 7919 + i) % total;
                    let path = format!("{}/{n}", spec.prefix);
                    match client.send(reqwest::Method::GET, &path, None, &[]).await {
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
    match args.what {
        Some(BenchWhat::Ec(ec)) => codec::run(ec),
        Some(BenchWhat::Meta(m)) => meta::run(m),
        Some(BenchWhat::ListVersions(l)) => list_versions::run(l),
        Some(BenchWhat::Pd(p)) => pd::run(p),
        Some(BenchWhat::Put(a)) => run_load(a, workload("put", vec![(load::Op::Put, 1)])),
        Some(BenchWhat::Get(a)) => run_load(a, workload("get", vec![(load::Op::Get, 1)])),
        Some(BenchWhat::Stat(a)) => run_load(a, workload("stat", vec![(load::Op::Stat, 1)])),
        Some(BenchWhat::Delete(d)) => {
            let mut w = workload("delete", vec![(load::Op::Delete, 1)]);
            w.delete_batch = d.batch;
            run_load(d.load, w)
        }
        Some(BenchWhat::Mixed(m)) => {
            use load::Op;
            let w = vec![
                (Op::Get, m.get),
                (Op::Put, m.put),
                (Op::Stat, m.stat),
                (Op::Delete, m.delete),
            ];
            run_load(m.load, workload("mixed", w))
        }
        Some(BenchWhat::List(l)) => {
            let mut w = workload("list", vec![(load::Op::List, 1)]);
            w.list_max_keys = l.max_keys;
            run_load(l.load, w)
        }
        Some(BenchWhat::Multipart(m)) => {
            let Some(part) = payload::parse_size(&m.part_size) else {
                eprintln!(
                    "kura bench multipart: --part-size {:?}: not a size (e.g. 5MiB)",
                    m.part_size
                );
                return 2;
            };
            let mut w = workload("multipart", vec![(load::Op::Multipart, 1)]);
            w.part_size = part;
            run_load(m.load, w)
        }
        Some(BenchWhat::Limits(l)) => match limits::measure(&l.data_dir, l.disk_mib) {
            Ok(lim) => {
                print_limits(&lim);
                0
            }
            Err(e) => {
                eprintln!("kura bench limits: {}: {e}", l.data_dir.display());
                1
            }
        },
        Some(BenchWhat::Compare(c)) => {
            match (report::Report::load(&c.a), report::Report::load(&c.b)) {
                (Ok(a), Ok(b)) => {
                    print!("{}", report::compare(&a, &b));
                    0
                }
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("kura bench compare: {e}");
                    2
                }
            }
        }
        None => run_s3(args.s3),
    }
}

/// What a load subcommand runs; prefill for all but put and multipart.
fn workload(name: &'static str, weights: Vec<(load::Op, u32)>) -> load::Workload {
    use load::Op;
    let prefill = weights
        .iter()
        .any(|(op, n)| *n > 0 && matches!(op, Op::Get | Op::Stat | Op::Delete | Op::List));
    load::Workload {
        name,
        weights,
        prefill,
        part_size: 5 << 20,
        list_max_keys: 1000,
        delete_batch: 1,
    }
}

fn run_load(args: load::LoadArgs, w: load::Workload) -> i32 {
    let what = format!("kura bench {}", w.name);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{what}: {e}");
            return 1;
        }
    };
    match rt.block_on(load::run(args, w)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{what}: {e}");
            e.exit_code()
        }
    }
}

/// The machine-limits table every S3 run prints first.
fn print_limits(l: &limits::Limits) {
    println!("## Machine limits (this machine, same run)");
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
    println!(
        "| loopback TCP CPU per MiB: sender, receiver | {:.2} ms, {:.2} ms |",
        l.loopback_send_cpu_ms_per_mib, l.loopback_recv_cpu_ms_per_mib
    );
    println!("| MD5, one core | {:.0} MiB/s |", l.md5_mib_s);
    println!("| CRC32C, one core | {:.0} MiB/s |", l.crc32c_mib_s);
    println!();
}

/// Runs a bench's async body on a fresh multi-threaded runtime; its error,
/// if any, is printed after `what` and the exit code is 1.
fn block_on<E: std::fmt::Display>(
    what: &str,
    body: impl std::future::Future<Output = Result<(), E>>,
) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{what}: {e}");
            return 1;
        }
    };
    match rt.block_on(body) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{what}: {e}");
            1
        }
    }
}

fn run_s3(args: S3Args) -> i32 {
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

/// The HTTP client of an S3 bench: for an https:// endpoint it trusts `ca`
/// only, else the system's roots.
pub(crate) fn http_client(
    endpoint: &str,
    ca: Option<&std::path::Path>,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256);
    if endpoint.starts_with("https://") {
        b = match ca {
            Some(ca) => b.use_preconfigured_tls(
                kura_pd_client::tls::rustls_client_from_pem(ca, None)
                    .map_err(|e| format!("--ca-file: {e}"))?,
            ),
            None => load::add_system_roots(b).map_err(|e| e.to_string())?,
        };
    }
    b.build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// The dev cluster's `cluster.json` in `data_dir`, if any, and the S3 endpoint to
/// use: `explicit`, else that cluster's, else the default local one.
pub(crate) fn endpoint_of(
    explicit: Option<&str>,
    data_dir: &std::path::Path,
) -> (Option<serde_json::Value>, String) {
    let cluster: Option<serde_json::Value> = std::fs::read(data_dir.join("cluster.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let endpoint = explicit
        .map(String::from)
        .or_else(|| {
            cluster
                .as_ref()
                .and_then(|c| c["s3"].as_str().map(String::from))
        })
        .unwrap_or_else(|| "http://127.0.0.1:9000".into());
    (cluster, endpoint)
}

async fn run_async(args: S3Args) -> i32 {
    let (cluster, endpoint) = endpoint_of(args.endpoint.as_deref(), &args.data_dir);
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
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let from_cluster = args.endpoint.is_none() && cluster.is_some();
    let ca = args.ca_file.clone().or_else(|| {
        from_cluster
            .then(|| cluster.as_ref()?["tls"]["ca"].as_str().map(PathBuf::from))
            .flatten()
    });
    let http = match http_client(&endpoint, ca.as_deref()) {
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
    if let Some(l) = &limits {
        print_limits(l);
    }

    let server = match client
        .send(reqwest::Method::PUT, "/kura-bench", None, &[])
        .await
    {
        Ok(r) if r.status().is_success() || r.status().as_u16() == 409 => r
            .headers()
            .get("server")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
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
    };
    let label = args.label.clone().or(server).unwrap_or_else(|| {
        if args.endpoint.is_none() && cluster.is_some() {
            "Kura".into()
        } else {
            client.host.clone()
        }
    });

    if args.max_phase_gib.is_nan() || args.max_phase_gib <= 0.0 {
        eprintln!("kura bench: --max-phase-gib must be > 0");
        return 2;
    }
    // Storage amplification needs the data nodes' directories; without
    // cluster.json (a remote endpoint) the column stays empty.
    let seg_dirs = match disk_usage::segment_dirs(&args.data_dir) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("bench: no storage amplification: {e}");
            None
        }
    };
    let class_label = args.storage_class.as_deref().unwrap_or("bucket default");
    let class: Option<Arc<str>> = args.storage_class.as_deref().map(Arc::from);

    println!(
        "## {label} ({endpoint}), storage class {class_label}, {} s per phase",
        args.seconds
    );
    println!();
    println!(
        "| op | size | conc | ops/s | MiB/s | p50 ms | p99 ms | errors | disk/logical | vs limit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for &size in &sizes {
        for &conc in &args.concurrency {
            let written = Arc::new(AtomicU64::new(0));
            let prefix: Arc<str> = Arc::from(format!(
                "/kura-bench/{}/{}",
                args.storage_class.as_deref().unwrap_or("default"),
                human(size)
            ));
            for put in [true, false] {
                let before = sample_usage(seg_dirs.as_deref(), put);
                let spec = PhaseSpec {
                    put,
                    size,
                    conc,
                    secs: args.seconds,
                    prefix: prefix.clone(),
                    class: class.clone(),
                    max_objects: ((args.max_phase_gib * (1u64 << 30) as f64) / size as f64)
                        .ceil()
                        .max(1.0) as u64,
                };
                let r = phase(client.clone(), spec, written.clone()).await;
                let after = sample_usage(seg_dirs.as_deref(), put);
                let amp = match (before, after) {
                    (Some(b), Some(a)) if r.bytes > 0 => Some((
                        (a.total() as f64 - b.total() as f64) / r.bytes as f64,
                        a.reclaimed_since(&b),
                    )),
                    _ => None,
                };
                let secs = r.elapsed.as_secs_f64();
                let mibs = r.bytes as f64 / (1024.0 * 1024.0) / secs;
                let amp_cell = match amp {
                    Some((x, false)) => format!("{x:.3}"),
                    Some((x, true)) => format!("{x:.3} (compaction ran: too low)"),
                    None => String::new(),
                };
                let disk_factor = amp
                    .filter(|(x, reclaimed)| !reclaimed && *x > 0.0)
                    .map(|(x, _)| x)
                    .or_else(|| nominal_amplification(args.storage_class.as_deref()));
                let ratio = limits
                    .map(|l| limit_ratio(&l, put, size, mibs, r.ops as f64 / secs, disk_factor))
                    .unwrap_or_default();
                println!(
                    "| {} | {} | {conc} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {amp_cell} | {ratio} |",
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
                    let path = format!("{prefix}/{i}");
                    async move { client.send(reqwest::Method::DELETE, &path, None, &[]).await }
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

/// Segment usage before/after a PUT phase (GET phases are not sampled).
fn sample_usage(dirs: Option<&[PathBuf]>, put: bool) -> Option<disk_usage::SegmentUsage> {
    if !put {
        return None;
    }
    match disk_usage::sample(dirs?) {
        Ok(u) => Some(u),
        Err(e) => {
            eprintln!("bench: reading segment sizes: {e}");
            None
        }
    }
}

/// Bytes written to disk per logical byte by design (before per-block headers).
fn nominal_amplification(class: Option<&str>) -> Option<f64> {
    match class?.to_ascii_uppercase().as_str() {
        "EC_4_2" | "STANDARD" => Some(1.5),
        "EC_8_3" | "STANDARD_IA" => Some(11.0 / 8.0),
        "REPLICA3" | "REDUCED_REDUNDANCY" => Some(3.0),
        _ => None,
    }
}

/// How a phase compares with this machine's limits. Large PUTs: the logical rate
/// over the disk's sequential write rate, and the same counting every byte the
/// cluster actually writes (`disk_factor` per logical byte: every data node shares
/// this one disk). Small PUTs: requests over the raw fsync rate. Large GETs: over
/// one loopback stream and over the disk's sequential read.
pub(super) fn limit_ratio(
    l: &limits::Limits,
    put: bool,
    size: usize,
    mibs: f64,
    ops_s: f64,
    disk_factor: Option<f64>,
) -> String {
    match (put, size >= 1 << 20) {
        (true, true) => {
            let mut s = format!("{:.2} of disk write", mibs / l.disk_write_mib_s);
            if let Some(f) = disk_factor {
                s += &format!(
                    " ({:.2} counting {f:.2}× written)",
                    f * mibs / l.disk_write_mib_s
                );
            }
            s
        }
        (true, false) => format!("{:.2} of fsync rate", ops_s / l.fsync_per_s),
        (false, true) => format!(
            "{:.2} of loopback, {:.2} of disk read",
            mibs / l.loopback_mib_s,
            mibs / l.disk_read_mib_s
        ),
        (false, false) => String::new(),
    }
}
