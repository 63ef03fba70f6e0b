//! `kura bench meta`: metadata throughput of a running cluster.
//!
//! For each region count R (default 1 and 64) a fresh bucket is created and,
//! for R > 1, its key range is cut into R equal parts by PD's split-region
//! operator before anything is written, and the bench waits until PD's
//! balance-leader has spread the new regions' leaders over the stores. Keys are `{h:04x}/{tag}{n}` with `h`
//! a hash of `n`, so writes spread evenly over the parts. Phases (each
//! `--seconds`, `--concurrency` clients): PUT 0 B, PUT 1 KiB (inline in the
//! record: no data node involved), HEAD, LIST v2 of 1,000 keys from a random
//! start. Then one big bucket of `--list-objects` empty objects is loaded and
//! listed start to end in pages of 1,000 (keys/s of one sequential client).
//! With one region, a last phase repeats PUT 0 B while the bucket's region
//! is split every `--split-every-ms` at a random key (the p99 of PUTs
//! during splits vs. without).
//! Buckets are left in place (metadata only).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kura_metashard::keys;
use kura_proto::metashard::Cf;

use super::cpu::PhaseCpu;
use super::{sigv4, Client};

#[derive(Debug, clap::Args)]
pub struct MetaArgs {
    /// The dev cluster's data dir: credentials, S3 endpoint and PD come from its cluster.json.
    #[arg(long, default_value = "./kura-data")]
    data_dir: PathBuf,
    /// Concurrent clients per phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Region counts to measure with (the bench bucket is pre-split into this many).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    regions: Vec<usize>,
    /// Empty objects loaded into the big bucket whose full listing is timed (0: skip).
    #[arg(long, default_value_t = 100_000)]
    list_objects: u64,
    /// Concurrent clients loading the big bucket.
    #[arg(long, default_value_t = 64)]
    load_concurrency: usize,
    /// In the 1-region round, also measure PUT 0 B while the bucket's
    /// regions are split this often (0: skip that phase).
    #[arg(long, default_value_t = 500)]
    split_every_ms: u64,
    /// Cap every metashard store at this much CPU (cores, e.g. 0.3) with a
    /// cgroup quota for the whole bench, as if each store ran on a machine
    /// of its own (needs root and a cgroup cpu controller).
    #[arg(long)]
    store_cpu: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("PD: {0}")]
    Pd(String),
    #[error("S3: {0}")]
    S3(String),
}

/// What the bench needs from `cluster.json` and `credentials.json`.
pub(super) struct Target {
    pub(super) client: Arc<Client>,
    /// The cluster's processes, for CPU use per phase.
    procs: Vec<super::cpu::Proc>,
    pub(super) endpoint: String,
    pd_grpc: String,
    /// PD's HTTP API base URL (`http://` or, with cluster TLS, `https://`).
    pd_http: String,
}

pub(super) fn target(data_dir: &std::path::Path) -> Result<Target, BenchError> {
    let cluster: serde_json::Value = std::fs::read(data_dir.join("cluster.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| BenchError::Setup(format!("no cluster.json in {}", data_dir.display())))?;
    let endpoint = cluster["s3"]
        .as_str()
        .unwrap_or("http://127.0.0.1:9000")
        .trim_end_matches('/')
        .to_string();
    let pd = cluster["components"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["role"] == "pd"))
        .ok_or_else(|| BenchError::Setup("cluster.json lists no PD".into()))?;
    let field = |f: &str| {
        pd[f]
            .as_str()
            .map(String::from)
            .ok_or_else(|| BenchError::Setup(format!("PD has no {f} address")))
    };
    let (pd_grpc, pd_http) = (field("grpc")?, field("http")?);
    let token = std::fs::read_to_string(data_dir.join(crate::dev::layout::PD_ADMIN_TOKEN_FILE))
        .map_err(|e| BenchError::Setup(format!("PD admin token: {e}")))?;
    let _ = PD_TOKEN.set(token.trim().to_string());
    let creds = crate::dev::load_credentials(&data_dir.join("credentials.json"))
        .ok()
        .flatten()
        .ok_or_else(|| BenchError::Setup("no credentials.json".into()))?;
    let mut http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256);
    // `kura dev --tls`: S3 and PD's API over HTTPS, PD's gRPC with mutual
    // TLS, all as the admin (its certificate is what PD's API wants).
    let pd_http = match cluster["tls"].as_object() {
        None => format!("http://{pd_http}"),
        Some(tls) => {
            let path = |f: &str| {
                tls.get(f)
                    .and_then(|v| v.as_str())
                    .map(PathBuf::from)
                    .ok_or_else(|| BenchError::Setup(format!("cluster.json: no tls.{f}")))
            };
            let (ca, cert, key) = (path("ca")?, path("admin_cert")?, path("admin_key")?);
            let cfg = kura_pd_client::tls::rustls_client_from_pem(&ca, Some((&cert, &key)))
                .map_err(|e| BenchError::Setup(e.to_string()))?;
            http = http.use_preconfigured_tls(cfg);
            match kura_pd_client::tls::install(&kura_pd_client::tls::TlsPaths { ca, cert, key }) {
                Ok(()) | Err(kura_pd_client::tls::TlsError::AlreadyInstalled) => {}
                Err(e) => return Err(BenchError::Setup(e.to_string())),
            }
            format!("https://{pd_http}")
        }
    };
    let http = http.build().map_err(|e| BenchError::Setup(e.to_string()))?;
    let client = Arc::new(Client {
        http,
        host: endpoint
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string(),
        endpoint: endpoint.clone(),
        signer: sigv4::Signer {
            access_key: creds.access_key,
            secret_key: creds.secret_key,
            region: "us-east-1".into(),
        },
    });
    Ok(Target {
        client,
        procs: super::cpu::procs(&cluster),
        endpoint,
        pd_grpc,
        pd_http,
    })
}

/// The bench key of object `n`: a 4-hex-digit hash prefix spreads keys evenly.
pub(super) fn key_of(tag: &str, n: u64) -> String {
    let h = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as u16;
    format!("{h:04x}/{tag}{n}")
}

/// Split points cutting the hash prefix space into `parts` equal ranges.
fn split_prefixes(parts: usize) -> Vec<String> {
    (1..parts.max(1))
        .map(|i| format!("{:04x}", i * 65536 / parts))
        .collect()
}

/// Percent-encodes everything but RFC 3986 unreserved characters (SigV4's rule).
fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of every `<tag>` element of an XML body.
fn xml_values<'a>(body: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        match rest.find(&close) {
            Some(j) => {
                out.push(&rest[..j]);
                rest = &rest[j + close.len()..];
            }
            None => break,
        }
    }
    out
}

/// PD's admin token (`DIR/pd-admin.token`): the split operators and the
/// reads of PD's HTTP API need it.
static PD_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn pd_token() -> &'static str {
    PD_TOKEN.get().map(String::as_str).unwrap_or_default()
}

async fn pd_get(
    http: &reqwest::Client,
    pd_http: &str,
    path: &str,
) -> Result<serde_json::Value, BenchError> {
    let resp = http
        .get(format!("{pd_http}{path}"))
        .bearer_auth(pd_token())
        .send()
        .await
        .map_err(|e| BenchError::Pd(e.to_string()))?;
    resp.json().await.map_err(|e| BenchError::Pd(e.to_string()))
}

/// The id PD's metadata gave bucket `name` (read through the metadata client).
async fn bucket_id(pd_grpc: &str, name: &str) -> Result<u64, BenchError> {
    let pd = kura_pd_client::PdClient::new(&[pd_grpc.to_string()])
        .map_err(|e| BenchError::Pd(e.to_string()))?;
    let meta = kura_metashard::MetaClient::new(Arc::new(kura_pd_client::RegionCache::new(pd)));
    let v = meta
        .get(Cf::Meta, &keys::bucket_key(name))
        .await
        .map_err(|e| BenchError::Setup(format!("reading bucket record: {e}")))?
        .ok_or_else(|| BenchError::Setup(format!("bucket {name} has no record")))?;
    let rec: kura_proto::meta::BucketRecord =
        keys::decode_value(&v).map_err(|e| BenchError::Setup(format!("bucket record: {e}")))?;
    Ok(rec.id)
}

/// Cuts bucket `bucket_id`'s range at the hash prefixes of `parts` parts.
async fn pre_split(t: &Target, bucket_id: u64, parts: usize) -> Result<Duration, BenchError> {
    let keys: Vec<Vec<u8>> = split_prefixes(parts)
        .iter()
        .map(|p| keys::object_prefix(bucket_id, p.as_bytes()))
        .collect();
    let Some(first) = keys.first() else {
        return Ok(Duration::ZERO);
    };
    let region = pd_get(
        &t.client.http,
        &t.pd_http,
        &format!("/pd/api/v1/region/key/{}", hex::encode_upper(first)),
    )
    .await?;
    let region_id = region["id"]
        .as_u64()
        .ok_or_else(|| BenchError::Pd(format!("no region for the bucket: {region}")))?;
    let t0 = Instant::now();
    let body = serde_json::json!({
        "name": "split-region",
        "region_id": region_id,
        "keys": keys.iter().map(hex::encode_upper).collect::<Vec<_>>(),
    });
    let resp = t
        .client
        .http
        .post(format!("{}/pd/api/v1/operators", t.pd_http))
        .bearer_auth(pd_token())
        .json(&body)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .map_err(|e| BenchError::Pd(e.to_string()))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(BenchError::Pd(format!("split-region: {status} {text}")));
    }
    Ok(t0.elapsed())
}

/// Polls PD until no operator runs and the stores' leader counts differ by
/// at most 2 (at most 60 s); returns the counts and the time waited.
async fn wait_leaders_spread(t: &Target) -> Result<(Vec<u64>, Duration), BenchError> {
    let t0 = Instant::now();
    loop {
        let stores = pd_get(&t.client.http, &t.pd_http, "/pd/api/v1/stores").await?;
        let ops = pd_get(&t.client.http, &t.pd_http, "/pd/api/v1/operators").await?;
        let leaders: Vec<u64> = stores["stores"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["store"]["state_name"] == "Up")
                    .map(|s| s["status"]["leader_count"].as_u64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        let idle = ops["running"].as_array().is_some_and(|a| a.is_empty());
        let spread = leaders.iter().max().unwrap_or(&0) - leaders.iter().min().unwrap_or(&0);
        // Heard from every new region's leader and nothing left to move.
        if (idle && spread <= 2 && t0.elapsed() > Duration::from_secs(2))
            || t0.elapsed() > Duration::from_secs(60)
        {
            return Ok((leaders, t0.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Regions PD lists that overlap bucket `bucket_id`'s key range.
async fn regions_of_bucket(t: &Target, bucket_id: u64) -> Result<usize, BenchError> {
    let v = pd_get(&t.client.http, &t.pd_http, "/pd/api/v1/regions").await?;
    let (lo, hi) = (
        hex::encode_upper(&keys::object_prefix(bucket_id, b"")[..9]),
        hex::encode_upper(keys::bucket_end(bucket_id)),
    );
    Ok(v["regions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| {
                    let s = r["start_key"].as_str().unwrap_or("");
                    let e = r["end_key"].as_str().unwrap_or("");
                    s < hi.as_str() && (e.is_empty() || e > lo.as_str())
                })
                .count()
        })
        .unwrap_or(0))
}

#[derive(Default)]
pub(super) struct Outcome {
    pub(super) ops: u64,
    items: u64,
    pub(super) errors: u64,
    latencies: Vec<Duration>,
    pub(super) elapsed: Duration,
}

impl Outcome {
    fn pct_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

/// Runs `op(worker, i)` on `conc` workers until `secs` pass or `op` says
/// stop (`None`). `op` returns the items it handled (keys listed, 1 otherwise).
pub(super) async fn drive<F, Fut>(conc: usize, secs: u64, op: F) -> Outcome
where
    F: Fn(usize, u64) -> Option<Fut> + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<u64, String>> + Send + 'static,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = Outcome::default();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let Some(fut) = op(w, i) else { break };
                i += 1;
                let t = Instant::now();
                match fut.await {
                    Ok(n) => {
                        r.ops += 1;
                        r.items += n;
                        r.latencies.push(t.elapsed());
                    }
                    Err(e) => {
                        if r.errors < 3 {
                            eprintln!("bench meta: {e}");
                        }
                        r.errors += 1;
                    }
                }
            }
            r
        }));
    }
    let mut total = Outcome::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.ops += r.ops;
            total.items += r.items;
            total.errors += r.errors;
            total.latencies.extend(r.latencies);
        }
    }
    total.elapsed = start.elapsed();
    total.latencies.sort();
    total
}

pub(super) async fn put(
    client: &Client,
    bucket: &str,
    key: &str,
    body: Bytes,
) -> Result<u64, String> {
    let r = client
        .send(
            reqwest::Method::PUT,
            &format!("/{bucket}/{key}"),
            Some(body),
            &[],
        )
        .await?;
    if r.status().is_success() {
        Ok(1)
    } else {
        Err(format!("PUT {}", r.status()))
    }
}

/// One LIST v2 page: (keys, next continuation token).
pub(super) async fn list_page(
    client: &Client,
    bucket: &str,
    start_after: Option<&str>,
    token: Option<&str>,
) -> Result<(u64, Option<String>), String> {
    // Canonical order: parameter names sorted.
    let mut q = Vec::new();
    if let Some(t) = token {
        q.push(format!("continuation-token={}", uri_encode(t)));
    }
    q.push("list-type=2".to_string());
    q.push("max-keys=1000".to_string());
    if let Some(s) = start_after {
        q.push(format!("start-after={}", uri_encode(s)));
    }
    let path = format!("/{bucket}?{}", q.join("&"));
    let r = client.send(reqwest::Method::GET, &path, None, &[]).await?;
    let status = r.status();
    let body = r.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        let head: String = body.chars().take(200).collect();
        return Err(format!("LIST {status}: {head}"));
    }
    let n = xml_values(&body, "Key").len() as u64;
    let next = xml_values(&body, "NextContinuationToken")
        .first()
        .map(|s| s.replace("&amp;", "&"));
    Ok((n, next))
}

pub(super) async fn create_bucket(client: &Client, bucket: &str) -> Result<(), BenchError> {
    let r = client
        .send(reqwest::Method::PUT, &format!("/{bucket}"), None, &[])
        .await
        .map_err(BenchError::S3)?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(BenchError::S3(format!(
            "create bucket {bucket}: {}",
            r.status()
        )))
    }
}

/// Runs one phase and measures the cluster's CPU use over it.
async fn phase(t: &Target, run: impl std::future::Future<Output = Outcome>) -> (Outcome, PhaseCpu) {
    let before = super::cpu::sample(&t.procs);
    let o = run.await;
    let after = super::cpu::sample(&t.procs);
    let cpu = super::cpu::phase(&t.procs, &before, &after, o.elapsed);
    (o, cpu)
}

/// Prints one phase's table row; returns its ops/s.
fn row(what: &str, (o, cpu): &(Outcome, PhaseCpu), per_op_items: bool) -> f64 {
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let items = if per_op_items {
        format!("{:.0} keys/s", o.items as f64 / secs)
    } else {
        String::new()
    };
    println!(
        "| {what} | {:.0} | {items} | {:.1} | {:.1} | {} | {:.0} / {:.0} | {:.0} | {:.0} |",
        o.ops as f64 / secs,
        o.pct_ms(0.5),
        o.pct_ms(0.99),
        o.errors,
        cpu.meta_max,
        cpu.meta_sum,
        cpu.gateway,
        cpu.cluster
    );
    o.ops as f64 / secs
}

/// The ops/s of each standard phase of one round, for the scaling table.
type RoundRates = Vec<(String, f64)>;

/// The closing table: each phase's ops/s with the bucket in every region
/// count measured, and each count's ratio to the first.
fn scaling_table(rounds: &[(usize, RoundRates)]) -> Vec<String> {
    let Some((base_parts, base)) = rounds.first() else {
        return Vec::new();
    };
    if rounds.len() < 2 {
        return Vec::new();
    }
    let mut head = "| phase |".to_string();
    let mut rule = "|---|".to_string();
    for (parts, _) in rounds {
        head += &format!(" {parts} region(s) ops/s |");
        rule += "---|";
    }
    for (parts, _) in &rounds[1..] {
        head += &format!(" {parts} / {base_parts} |");
        rule += "---|";
    }
    let mut out = vec![head, rule];
    for (i, (phase, base_rate)) in base.iter().enumerate() {
        let mut line = format!("| {phase} |");
        let rates: Vec<f64> = rounds
            .iter()
            .map(|(_, r)| r.get(i).map_or(0.0, |(_, v)| *v))
            .collect();
        for r in &rates {
            line += &format!(" {r:.0} |");
        }
        for r in &rates[1..] {
            line += &format!(" {:.2} |", r / base_rate.max(1e-9));
        }
        out.push(line);
    }
    out
}

async fn round(
    t: &Target,
    args: &MetaArgs,
    parts: usize,
    tag: u32,
) -> Result<RoundRates, BenchError> {
    let mut rates = RoundRates::new();
    let bucket = format!("kbm-{parts}r-{tag:08x}");
    create_bucket(&t.client, &bucket).await?;
    let id = bucket_id(&t.pd_grpc, &bucket).await?;
    if parts > 1 {
        let took = pre_split(t, id, parts).await?;
        eprintln!(
            "bench meta: {} splits by operator in {:.1} s",
            parts - 1,
            took.as_secs_f64()
        );
    }
    // New regions elect their leaders on the parent's store; PD's
    // balance-leader spreads them. Measure once it is done (or gave up).
    let (leaders, waited) = wait_leaders_spread(t).await?;
    eprintln!(
        "bench meta: leaders per store {leaders:?} after {:.1} s",
        waited.as_secs_f64()
    );
    let in_regions = regions_of_bucket(t, id).await?;
    println!();
    println!(
        "### Bucket in {in_regions} region(s) (asked {parts}), {} clients, {} s per phase",
        args.concurrency, args.seconds
    );
    println!();
    println!(
        "| phase | ops/s | items/s | p50 ms | p99 ms | errors | CPU %: busiest / all metashards | gateway | cluster |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let bucket: Arc<str> = Arc::from(bucket.as_str());
    for (tag, size) in [("z", 0usize), ("k", 1024)] {
        let next = Arc::new(AtomicU64::new(0));
        let body = Bytes::from(vec![0x5au8; size]);
        let (client, b, n2) = (t.client.clone(), bucket.clone(), next.clone());
        let o = phase(
            t,
            drive(args.concurrency, args.seconds, move |_, _| {
                let (client, b, body) = (client.clone(), b.clone(), body.clone());
                let n = n2.fetch_add(1, Ordering::Relaxed);
                Some(async move { put(&client, &b, &key_of(tag, n), body).await })
            }),
        )
        .await;
        let name = format!("PUT {size} B");
        rates.push((name.clone(), row(&name, &o, false)));
        if size > 0 {
            let written = next.load(Ordering::Relaxed).max(1);
            let (client, b) = (t.client.clone(), bucket.clone());
            let o = phase(
                t,
                drive(args.concurrency, args.seconds, move |w, i| {
                    let (client, b) = (client.clone(), b.clone());
                    let n = (w as u64 * 7919 + i * 104_729) % written;
                    Some(async move {
                        let r = client
                            .send(
                                reqwest::Method::HEAD,
                                &format!("/{b}/{}", key_of(tag, n)),
                                None,
                                &[],
                            )
                            .await?;
                        if r.status().is_success() {
                            Ok(1)
                        } else {
                            Err(format!("HEAD {}", r.status()))
                        }
                    })
                }),
            )
            .await;
            rates.push(("HEAD".into(), row("HEAD", &o, false)));
        }
    }
    let (client, b) = (t.client.clone(), bucket.clone());
    let o = phase(
        t,
        drive(args.concurrency, args.seconds, move |w, i| {
            let (client, b) = (client.clone(), b.clone());
            let start = format!("{:04x}", (w as u64 * 7919 + i * 977) % 65536);
            Some(async move {
                list_page(&client, &b, Some(start.as_str()), None)
                    .await
                    .map(|(n, _)| n)
            })
        }),
    )
    .await;
    rates.push(("LIST 1,000 keys".into(), row("LIST 1,000 keys", &o, true)));
    if parts == 1 && args.split_every_ms > 0 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let storm = tokio::spawn(split_storm(
            t.client.clone(),
            t.pd_http.clone(),
            id,
            Duration::from_millis(args.split_every_ms),
            stop.clone(),
        ));
        let next = Arc::new(AtomicU64::new(0));
        let (client, b) = (t.client.clone(), bucket.clone());
        let o = phase(
            t,
            drive(args.concurrency, args.seconds, move |_, _| {
                let (client, b) = (client.clone(), b.clone());
                let n = next.fetch_add(1, Ordering::Relaxed);
                Some(async move { put(&client, &b, &key_of("s", n), Bytes::new()).await })
            }),
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        let splits = storm.await.unwrap_or(0);
        row(&format!("PUT 0 B during {splits} splits"), &o, false);
    }
    Ok(rates)
}

/// Splits the region holding a random key of bucket `bucket_id` every
/// `every` until `stop`; returns how many splits succeeded.
async fn split_storm(
    client: Arc<Client>,
    pd_http: String,
    bucket_id: u64,
    every: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> u64 {
    let mut done = 0;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(every).await;
        n += 1;
        // Same spread as the keys written: a 4-hex-digit prefix.
        let prefix = format!("{:04x}/", (n.wrapping_mul(40_503)) % 65_536);
        let key = keys::object_prefix(bucket_id, prefix.as_bytes());
        let path = format!("/pd/api/v1/region/key/{}", hex::encode_upper(&key));
        let Ok(region) = pd_get(&client.http, &pd_http, &path).await else {
            continue;
        };
        let Some(region_id) = region["id"].as_u64() else {
            continue;
        };
        let body = serde_json::json!({
            "name": "split-region",
            "region_id": region_id,
            "keys": [hex::encode_upper(&key)],
        });
        let ok = client
            .http
            .post(format!("{pd_http}/pd/api/v1/operators"))
            .bearer_auth(pd_token())
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        done += u64::from(ok);
    }
    done
}

async fn big_list(t: &Target, args: &MetaArgs, tag: u32) -> Result<(), BenchError> {
    let bucket: Arc<str> = Arc::from(format!("kbm-big-{tag:08x}").as_str());
    create_bucket(&t.client, &bucket).await?;
    let id = bucket_id(&t.pd_grpc, &bucket).await?;
    let total = args.list_objects;
    let next = Arc::new(AtomicU64::new(0));
    let (client, b, n2) = (t.client.clone(), bucket.clone(), next.clone());
    eprintln!("bench meta: loading {total} empty objects ...");
    // No time limit: the load stops after `total` objects (a day at most).
    let load = drive(args.load_concurrency, 86_400, move |_, _| {
        let n = n2.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            return None;
        }
        let (client, b) = (client.clone(), b.clone());
        Some(async move { put(&client, &b, &key_of("o", n), Bytes::new()).await })
    })
    .await;
    if load.errors > 0 {
        return Err(BenchError::S3(format!(
            "{} PUTs failed while loading",
            load.errors
        )));
    }
    // Let automatic splits of the loaded bucket settle before listing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let in_regions = regions_of_bucket(t, id).await?;
    let t0 = Instant::now();
    let (mut listed, mut pages, mut token) = (0u64, 0u64, None::<String>);
    let mut page_ms = Vec::new();
    loop {
        let p0 = Instant::now();
        let (n, next) = list_page(&t.client, &bucket, None, token.as_deref())
            .await
            .map_err(BenchError::S3)?;
        page_ms.push(p0.elapsed().as_secs_f64() * 1000.0);
        listed += n;
        pages += 1;
        match next {
            Some(tok) if n > 0 => token = Some(tok),
            _ => break,
        }
    }
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    page_ms.sort_by(|a, b| a.total_cmp(b));
    let p50 = page_ms.get(page_ms.len() / 2).copied().unwrap_or(0.0);
    println!();
    println!("### Big bucket: {total} objects in {in_regions} region(s)");
    println!();
    println!("| what | value |");
    println!("|---|---|");
    println!(
        "| load ({} clients, PUT 0 B) | {:.0} objects/s ({:.0} s) |",
        args.load_concurrency,
        load.ops as f64 / load.elapsed.as_secs_f64().max(1e-9),
        load.elapsed.as_secs_f64()
    );
    println!(
        "| full LIST v2, one client, pages of 1,000 | {:.0} keys/s ({listed} keys, {pages} pages, {secs:.1} s, page p50 {p50:.1} ms) |",
        listed as f64 / secs
    );
    if listed != total {
        return Err(BenchError::S3(format!(
            "listed {listed} keys, loaded {total}"
        )));
    }
    Ok(())
}

pub fn run(args: MetaArgs) -> i32 {
    super::block_on("kura bench meta", run_async(args))
}

async fn run_async(args: MetaArgs) -> Result<(), BenchError> {
    let t = target(&args.data_dir)?;
    let tag: u32 = rand::random();
    println!(
        "## kura bench meta ({}), {} CPU cores",
        t.endpoint,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let _caps = match args.store_cpu {
        Some(cores) => {
            let stores: Vec<u32> = t
                .procs
                .iter()
                .filter(|p| p.role == "metashard")
                .map(|p| p.pid)
                .collect();
            let caps =
                super::store_cpu::StoreCaps::apply(&stores, cores).map_err(BenchError::Setup)?;
            println!("bench meta: {}", caps.describe);
            Some(caps)
        }
        None => None,
    };
    let mut rounds = Vec::new();
    for &parts in &args.regions {
        rounds.push((parts.max(1), round(&t, &args, parts.max(1), tag).await?));
    }
    let table = scaling_table(&rounds);
    if !table.is_empty() {
        println!();
        println!("### ops/s by region count");
        println!();
        for line in table {
            println!("{line}");
        }
    }
    if args.list_objects > 0 {
        big_list(&t, &args, tag).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_the_split_ranges() {
        let points = split_prefixes(64);
        assert_eq!(points.len(), 63);
        assert_eq!(points[0], "0400");
        let mut per = vec![0u32; 64];
        for n in 0..64_000 {
            let k = key_of("k", n);
            per[points.partition_point(|p| p.as_str() <= &k[..4])] += 1;
        }
        assert!(per.iter().all(|&c| (700..1300).contains(&c)), "{per:?}");
        assert!(split_prefixes(1).is_empty());
    }

    #[test]
    fn scaling_table_gives_each_count_its_ratio_to_the_first() {
        let r = |v: &[(&str, f64)]| -> RoundRates {
            v.iter().map(|(p, x)| (p.to_string(), *x)).collect()
        };
        assert!(scaling_table(&[(1, r(&[("HEAD", 10.0)]))]).is_empty());
        let t = scaling_table(&[
            (1, r(&[("PUT 0 B", 100.0), ("HEAD", 50.0)])),
            (64, r(&[("PUT 0 B", 150.0), ("HEAD", 25.0)])),
        ]);
        assert_eq!(
            t,
            vec![
                "| phase | 1 region(s) ops/s | 64 region(s) ops/s | 64 / 1 |",
                "|---|---|---|---|",
                "| PUT 0 B | 100 | 150 | 1.50 |",
                "| HEAD | 50 | 25 | 0.50 |",
            ]
        );
    }

    #[test]
    fn xml_and_uri_helpers() {
        let body =
            "<a><Key>x</Key><Key>y/z</Key><NextContinuationToken>t+k=</NextContinuationToken></a>";
        assert_eq!(xml_values(body, "Key"), vec!["x", "y/z"]);
        assert_eq!(xml_values(body, "NextContinuationToken"), vec!["t+k="]);
        assert_eq!(uri_encode("a/b+c=~"), "a%2Fb%2Bc%3D~");
    }
}
