//! `kura bench put|get|mixed|list|stat|delete|multipart`: a warp-class S3
//! load generator against any endpoint (see docs/decisions/0038-bench-load.md).
//!
//! A run prefills objects when the operation needs them, then N workers
//! issue requests until the duration, the op count or `--autoterm` ends the
//! phase; each worker keeps its own latency histograms (merged at the end:
//! no lock on the request path). The bench's own CPU over the phase is
//! reported beside the results, so a reader can check it was not the
//! bottleneck.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};

use super::payload::{self, Payload, Sizes};
use super::report::{self, BenchCpu, Latency, OpReport, Report, ServerCpu};
use super::sigv4::{canonical_query, uri_encode, Signer};

/// Why a load run could not start or finish (per-request failures are
/// counted as errors in the results instead).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad flags (exit 2, like clap's own usage errors).
    #[error("{0}")]
    Usage(String),
    /// The endpoint, bucket or prefill failed (exit 1).
    #[error("{0}")]
    Setup(String),
}

impl LoadError {
    pub fn exit_code(&self) -> i32 {
        match self {
            LoadError::Usage(_) => 2,
            LoadError::Setup(_) => 1,
        }
    }
}

/// Flags every load subcommand shares.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// S3 endpoint, e.g. https://s3.example.com:9000 [default: the dev
    /// cluster's in --data-dir, else http://127.0.0.1:9000]
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
    /// Access key [default: the dev cluster's credentials.json]
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    access_key: Option<String>,
    /// Secret key [default: the dev cluster's credentials.json]
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: Option<String>,
    /// Region signed into requests.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
    /// A dev cluster's data dir: endpoint, credentials and CA when not given,
    /// and where this machine's disk limits are measured.
    #[arg(long, default_value = "./kura-data")]
    data_dir: PathBuf,
    /// CA certificate (PEM) to trust for an https:// endpoint [default: the
    /// dev cluster's, else the system's]
    #[arg(long, visible_alias = "ca-bundle", value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Do not verify the endpoint's TLS certificate.
    #[arg(long)]
    insecure: bool,
    /// Bucket to use; created if missing. Objects go under a fresh prefix.
    #[arg(long, default_value = "kura-bench")]
    bucket: String,
    /// Key prefix [default: a random one per run].
    #[arg(long)]
    prefix: Option<String>,
    /// Name of the store in reports [default: the endpoint's Server header,
    /// else "Kura" for the dev cluster of --data-dir, else the endpoint's host].
    #[arg(long)]
    label: Option<String>,
    /// Object size (e.g. 4KiB, 1MiB, 10MB); the maximum with --obj.randsize.
    #[arg(long = "obj.size", default_value = "64KiB")]
    obj_size: String,
    /// Random sizes between --obj.minsize and --obj.size: log (as many
    /// objects per decade; the default) or uniform.
    #[arg(long = "obj.randsize", num_args = 0..=1, default_missing_value = "log",
          value_parser = ["log", "uniform"])]
    obj_randsize: Option<String>,
    /// Smallest object with --obj.randsize.
    #[arg(long = "obj.minsize", default_value = "1")]
    obj_minsize: String,
    /// Concurrent requests.
    #[arg(long, default_value_t = 16)]
    concurrent: usize,
    /// How long the measured phase runs at most (e.g. 500ms, 30s, 5m).
    #[arg(long, default_value = "30s")]
    duration: String,
    /// Stop after this many operations (also bounded by --duration).
    #[arg(long)]
    ops: Option<u64>,
    /// Objects written before the measured phase of get, stat, list, delete
    /// and mixed.
    #[arg(long, default_value_t = 1000)]
    objects: u64,
    /// Stop early once ops/s has stayed within ±--autoterm.pct of its mean
    /// for --autoterm.dur.
    #[arg(long)]
    autoterm: bool,
    /// The window --autoterm judges (whole seconds, at least 2).
    #[arg(long = "autoterm.dur", default_value = "5s")]
    autoterm_dur: String,
    /// How far (percent) each second's ops/s may stray from the window's mean.
    #[arg(long = "autoterm.pct", default_value_t = 7.5)]
    autoterm_pct: f64,
    /// Print a live progress line to stderr (default: only when it is a terminal).
    #[arg(long)]
    progress: bool,
    /// Write the results as JSON to this file (for `kura bench compare`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Fraction of every body that compresses away (0: random bytes, the default).
    #[arg(long, default_value_t = 0.0)]
    compressibility: f64,
    /// Skip measuring this machine's limits.
    #[arg(long)]
    no_limits: bool,
    /// Processes of the store measured, e.g. `$(pgrep -d, radosgw)`: their CPU
    /// during the run is reported per request and per MiB [default: every
    /// process of the dev cluster in --data-dir, when it is the endpoint]
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// MiB written when measuring the disk.
    #[arg(long, default_value_t = 512)]
    disk_mib: usize,
    /// x-amz-storage-class sent with every PUT.
    #[arg(long)]
    storage_class: Option<String>,
    /// Leave the objects in the bucket after the run.
    #[arg(long)]
    keep: bool,
}

/// Operations, as named in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Stat,
    Delete,
    List,
    Multipart,
}

const OPS: [Op; 6] = [
    Op::Put,
    Op::Get,
    Op::Stat,
    Op::Delete,
    Op::List,
    Op::Multipart,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "PUT",
            Op::Get => "GET",
            Op::Stat => "STAT",
            Op::Delete => "DELETE",
            Op::List => "LIST",
            Op::Multipart => "MULTIPART",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// What a run does besides the shared flags.
#[derive(Debug, Clone)]
pub struct Workload {
    /// put, get, ... for reports.
    pub name: &'static str,
    /// Operations with their weights (one entry but for mixed).
    pub weights: Vec<(Op, u32)>,
    /// Objects to write first.
    pub prefill: bool,
    pub part_size: u64,
    pub list_max_keys: u32,
    /// Keys per DELETE request (more than 1: DeleteObjects).
    pub delete_batch: u32,
}

/// `1.5s`, `500ms`, `2m`, `1h`, `30` (seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 30.0 * 86400.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

/// Settings after validation.
struct Plan {
    sizes: Sizes,
    duration: Duration,
    autoterm: Option<(Duration, f64)>,
    prefix: String,
}

fn plan(args: &LoadArgs, w: &Workload) -> Result<Plan, LoadError> {
    let usage = |m: String| LoadError::Usage(m);
    let size = payload::parse_size(&args.obj_size).ok_or_else(|| {
        usage(format!(
            "--obj.size {:?}: not a size (e.g. 64KiB, 1MiB)",
            args.obj_size
        ))
    })?;
    let min = payload::parse_size(&args.obj_minsize).ok_or_else(|| {
        usage(format!(
            "--obj.minsize {:?}: not a size (e.g. 1KiB)",
            args.obj_minsize
        ))
    })?;
    let sizes = match args.obj_randsize.as_deref() {
        None => Sizes::Fixed(size),
        Some(_) if min > size => {
            return Err(usage(format!(
                "--obj.minsize {} is larger than --obj.size {}",
                args.obj_minsize, args.obj_size
            )))
        }
        Some("uniform") => Sizes::Uniform { min, max: size },
        Some(_) => Sizes::Log { min, max: size },
    };
    if w.weights.iter().any(|(op, _)| *op == Op::Multipart) {
        if w.part_size == 0 {
            return Err(usage("--part-size must be > 0".into()));
        }
        if sizes.max().div_ceil(w.part_size) > 10_000 {
            return Err(usage(format!(
                "--obj.size {} needs more than 10,000 parts of --part-size {}",
                args.obj_size,
                payload::human(w.part_size)
            )));
        }
        if sizes.max() == 0 {
            return Err(usage("multipart needs --obj.size > 0".into()));
        }
    }
    let duration = parse_duration(&args.duration).ok_or_else(|| {
        usage(format!(
            "--duration {:?}: not a duration (e.g. 10s, 2m)",
            args.duration
        ))
    })?;
    if args.concurrent == 0 || args.concurrent > 10_000 {
        return Err(usage("--concurrent must be between 1 and 10000".into()));
    }
    if args.ops == Some(0) {
        return Err(usage("--ops must be > 0".into()));
    }
    if !(0.0..=1.0).contains(&args.compressibility) {
        return Err(usage("--compressibility must be between 0 and 1".into()));
    }
    if w.weights.iter().all(|(_, n)| *n == 0) {
        return Err(usage("mixed: every weight is 0".into()));
    }
    if w.prefill && args.objects == 0 {
        return Err(usage(format!("{}: --objects must be > 0", w.name)));
    }
    if w.delete_batch == 0 || w.delete_batch > 1000 {
        return Err(usage(format!(
            "--batch {}: DeleteObjects takes 1 to 1000 keys",
            w.delete_batch
        )));
    }
    if w.list_max_keys == 0 || w.list_max_keys > 1000 {
        return Err(usage("--max-keys must be between 1 and 1000".into()));
    }
    let autoterm = if args.autoterm {
        let d = parse_duration(&args.autoterm_dur).ok_or_else(|| {
            usage(format!(
                "--autoterm.dur {:?}: not a duration",
                args.autoterm_dur
            ))
        })?;
        if !(args.autoterm_pct > 0.0 && args.autoterm_pct < 100.0) {
            return Err(usage("--autoterm.pct must be between 0 and 100".into()));
        }
        Some((d, args.autoterm_pct))
    } else {
        None
    };
    let prefix = match &args.prefix {
        Some(p) => p.clone(),
        None => format!("run-{:08x}/", rand::thread_rng().gen::<u32>()),
    };
    Ok(Plan {
        sizes,
        duration,
        autoterm,
        prefix,
    })
}

/// The minimal S3 client of a run: path-style, SigV4 with UNSIGNED-PAYLOAD.
struct S3 {
    http: reqwest::Client,
    /// scheme://host[:port]
    base: String,
    host: String,
    signer: Signer,
    bucket: String,
    class: Option<String>,
}

impl S3 {
    /// A signed request on the bucket (`key` None) or one of its objects.
    fn request(
        &self,
        method: Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let path = match key {
            Some(k) => format!("/{}/{}", self.bucket, uri_encode(k, false)),
            None => format!("/{}", self.bucket),
        };
        let q = canonical_query(query);
        let url = if q.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{q}", self.base)
        };
        let mut req = self.http.request(method.clone(), url);
        for (k, v) in self
            .signer
            .headers_with_query(method.as_str(), &self.host, &path, &q, extra)
        {
            req = req.header(k, v);
        }
        req
    }

    async fn put(&self, key: &str, body: reqwest::Body, len: u64) -> Result<(), String> {
        let class: Vec<(&str, &str)> = self
            .class
            .as_deref()
            .map(|c| ("x-amz-storage-class", c))
            .into_iter()
            .collect();
        let resp = self
            .request(Method::PUT, Some(key), &[], &class)
            .header("content-length", len)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("PUT: {e}"))?;
        expect_ok("PUT", resp).await.map(|_| ())
    }
}

/// The response if 2xx, else an error naming the S3 code in its body.
async fn expect_ok(what: &str, resp: reqwest::Response) -> Result<reqwest::Response, String> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(format!(
        "{what}: HTTP {status} {}",
        xml_value(&body, "Code").unwrap_or_default()
    ))
}

/// The text of the first `<tag>` in `xml`, entities decoded.
fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

#[derive(Debug, Clone, Copy)]
struct Obj {
    id: u64,
    size: u64,
}

/// The objects that exist, for reads and deletes to pick from.
#[derive(Default)]
struct Pool {
    objs: Vec<Obj>,
    live: HashSet<u64>,
}

/// Everything the workers share.
struct Ctx {
    s3: S3,
    payload: Payload,
    sizes: Sizes,
    prefix: String,
    workload: Workload,
    weight_sum: u32,
    pool: Mutex<Pool>,
    next_id: AtomicU64,
    /// Requests started, against --ops.
    started: AtomicU64,
    max_ops: Option<u64>,
    stop: AtomicBool,
    /// Set when the measured phase starts (after the prefill).
    deadline: std::sync::OnceLock<Instant>,
    /// Live counters for the progress line and autoterm.
    done: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    /// Keys a full listing must return (list runs).
    list_expect: u64,
}

impl Ctx {
    fn key(&self, id: u64) -> String {
        format!("{}obj-{id}", self.prefix)
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        // A worker that panicked mid-update left a valid Vec/HashSet.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pick(&self, rng: &mut StdRng) -> Option<Obj> {
        let p = self.pool();
        if p.objs.is_empty() {
            return None;
        }
        Some(p.objs[rng.gen_range(0..p.objs.len())])
    }

    fn take(&self, rng: &mut StdRng) -> Option<Obj> {
        let mut p = self.pool();
        if p.objs.is_empty() {
            return None;
        }
        let i = rng.gen_range(0..p.objs.len());
        let o = p.objs.swap_remove(i);
        p.live.remove(&o.id);
        Some(o)
    }

    fn add(&self, o: Obj) {
        let mut p = self.pool();
        p.live.insert(o.id);
        p.objs.push(o);
    }

    fn is_live(&self, id: u64) -> bool {
        self.pool().live.contains(&id)
    }

    fn choose(&self, rng: &mut StdRng) -> Op {
        let w = &self.workload.weights;
        if w.len() == 1 {
            return w[0].0;
        }
        let mut x = rng.gen_range(0..self.weight_sum);
        for &(op, n) in w {
            if x < n {
                return op;
            }
            x -= n;
        }
        w[0].0
    }
}

enum Outcome {
    /// Bytes moved.
    Done(u64),
    /// This many operations done by one request (DeleteObjects' keys).
    DoneMany(u64),
    /// Nothing to act on (the pool is empty) or a read raced a delete.
    Skipped,
}

/// One worker's listing walk in progress.
#[derive(Default)]
struct ListWalk {
    token: Option<String>,
    seen: u64,
}

async fn run_op(
    ctx: &Ctx,
    op: Op,
    rng: &mut StdRng,
    walk: &mut ListWalk,
) -> Result<Outcome, String> {
    match op {
        Op::Put => {
            let size = ctx.sizes.draw(rng);
            let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
            ctx.s3
                .put(&ctx.key(id), ctx.payload.body(size), size)
                .await?;
            ctx.add(Obj { id, size });
            Ok(Outcome::Done(size))
        }
        Op::Get | Op::Stat => {
            let Some(o) = ctx.pick(rng) else {
                return Ok(Outcome::Skipped);
            };
            let method = if op == Op::Get {
                Method::GET
            } else {
                Method::HEAD
            };
            let resp = ctx
                .s3
                .request(method, Some(&ctx.key(o.id)), &[], &[])
                .send()
                .await
                .map_err(|e| format!("{}: {e}", op.name()))?;
            if resp.status() == StatusCode::NOT_FOUND && !ctx.is_live(o.id) {
                // A mixed run's DELETE took it after this read picked it.
                return Ok(Outcome::Skipped);
            }
            let mut resp = expect_ok(op.name(), resp).await?;
            if op == Op::Stat {
                let len = resp
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                return match len {
                    Some(n) if n == o.size => Ok(Outcome::Done(0)),
                    other => Err(format!(
                        "STAT: content-length {other:?}, expected {}",
                        o.size
                    )),
                };
            }
            let mut got = 0u64;
            while let Some(c) = resp.chunk().await.map_err(|e| format!("GET body: {e}"))? {
                got += c.len() as u64;
            }
            if got != o.size {
                return Err(format!("GET returned {got} bytes, expected {}", o.size));
            }
            Ok(Outcome::Done(got))
        }
        Op::Delete if ctx.workload.delete_batch > 1 => delete_batch(ctx, rng).await,
        Op::Delete => {
            let Some(o) = ctx.take(rng) else {
                return Ok(Outcome::Skipped);
            };
            let resp = ctx
                .s3
                .request(Method::DELETE, Some(&ctx.key(o.id)), &[], &[])
                .send()
                .await;
            match resp {
                Ok(r) => expect_ok("DELETE", r).await.map(|_| Outcome::Done(0)),
                Err(e) => {
                    // Still there as far as we know: cleanup retries it.
                    ctx.add(o);
                    Err(format!("DELETE: {e}"))
                }
            }
        }
        Op::List => list_page(ctx, walk).await,
        Op::Multipart => multipart(ctx, rng).await,
    }
}

/// One DeleteObjects request for up to `--batch` objects of the pool; every
/// key must come back deleted.
async fn delete_batch(ctx: &Ctx, rng: &mut StdRng) -> Result<Outcome, String> {
    let mut objs = Vec::new();
    while objs.len() < ctx.workload.delete_batch as usize {
        match ctx.take(rng) {
            Some(o) => objs.push(o),
            None => break,
        }
    }
    if objs.is_empty() {
        return Ok(Outcome::Skipped);
    }
    let mut body = String::from("<Delete><Quiet>true</Quiet>");
    for o in &objs {
        body += &format!("<Object><Key>{}</Key></Object>", xml_escape(&ctx.key(o.id)));
    }
    body += "</Delete>";
    use base64::Engine;
    use md5::Digest;
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body.as_bytes()));
    let sent = ctx
        .s3
        .request(
            Method::POST,
            None,
            &[("delete", "")],
            &[("content-md5", &md5)],
        )
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => expect_ok("DELETE_OBJECTS", r).await,
        Err(e) => Err(format!("DELETE_OBJECTS: {e}")),
    };
    let failed = match resp {
        Ok(r) => {
            let text = r.text().await.map_err(|e| format!("DELETE_OBJECTS: {e}"))?;
            // Quiet mode: the answer lists only the keys that failed.
            text.contains("<Error>")
                .then(|| format!("DELETE_OBJECTS: {text}"))
        }
        Err(e) => Some(e),
    };
    match failed {
        None => Ok(Outcome::DoneMany(objs.len() as u64)),
        Some(e) => {
            // Some may still be there: cleanup retries them one by one.
            for o in objs {
                ctx.add(o);
            }
            Err(e)
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One ListObjectsV2 request of a walk over the run's prefix; the request
/// that ends a walk checks it saw every object.
async fn list_page(ctx: &Ctx, walk: &mut ListWalk) -> Result<Outcome, String> {
    let max_keys = ctx.workload.list_max_keys.to_string();
    let mut q: Vec<(&str, &str)> = vec![
        ("list-type", "2"),
        ("prefix", &ctx.prefix),
        ("max-keys", &max_keys),
    ];
    if let Some(t) = &walk.token {
        q.push(("continuation-token", t));
    }
    let resp = ctx
        .s3
        .request(Method::GET, None, &q, &[])
        .send()
        .await
        .map_err(|e| format!("LIST: {e}"))?;
    let body = expect_ok("LIST", resp)
        .await?
        .text()
        .await
        .map_err(|e| format!("LIST body: {e}"))?;
    let n = body.matches("<Key>").count() as u64;
    let truncated = xml_value(&body, "IsTruncated").as_deref() == Some("true");
    walk.seen += n;
    if truncated {
        match xml_value(&body, "NextContinuationToken") {
            Some(t) => walk.token = Some(t),
            None => {
                *walk = ListWalk::default();
                return Err("LIST: truncated without a NextContinuationToken".into());
            }
        }
    } else {
        let seen = walk.seen;
        *walk = ListWalk::default();
        if seen != ctx.list_expect {
            return Err(format!(
                "LIST: a full listing returned {seen} keys, expected {}",
                ctx.list_expect
            ));
        }
    }
    Ok(Outcome::Done(body.len() as u64))
}

/// One whole multipart upload: create, parts in order, complete (abort on
/// failure so no upload is left behind).
async fn multipart(ctx: &Ctx, rng: &mut StdRng) -> Result<Outcome, String> {
    let size = ctx.sizes.draw(rng).max(1);
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let key = ctx.key(id);
    let class: Vec<(&str, &str)> = ctx
        .s3
        .class
        .as_deref()
        .map(|c| ("x-amz-storage-class", c))
        .into_iter()
        .collect();
    let resp = ctx
        .s3
        .request(Method::POST, Some(&key), &[("uploads", "")], &class)
        .send()
        .await
        .map_err(|e| format!("CreateMultipartUpload: {e}"))?;
    let body = expect_ok("CreateMultipartUpload", resp)
        .await?
        .text()
        .await
        .map_err(|e| format!("CreateMultipartUpload: {e}"))?;
    let upload = xml_value(&body, "UploadId")
        .ok_or_else(|| "CreateMultipartUpload: no UploadId in the answer".to_string())?;
    let result = upload_parts(ctx, &key, &upload, size).await;
    if result.is_err() {
        let _ = ctx
            .s3
            .request(Method::DELETE, Some(&key), &[("uploadId", &upload)], &[])
            .send()
            .await;
    } else {
        ctx.add(Obj { id, size });
    }
    result.map(|_| Outcome::Done(size))
}

async fn upload_parts(ctx: &Ctx, key: &str, upload: &str, size: u64) -> Result<(), String> {
    let part_size = ctx.workload.part_size;
    let mut complete = String::from("<CompleteMultipartUpload>");
    let mut offset = 0u64;
    let mut n = 1u32;
    while offset < size {
        let len = part_size.min(size - offset);
        let num = n.to_string();
        let resp = ctx
            .s3
            .request(
                Method::PUT,
                Some(key),
                &[("partNumber", &num), ("uploadId", upload)],
                &[],
            )
            .header("content-length", len)
            .body(ctx.payload.body(len))
            .send()
            .await
            .map_err(|e| format!("UploadPart: {e}"))?;
        let resp = expect_ok("UploadPart", resp).await?;
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| "UploadPart: no ETag".to_string())?
            .replace('&', "&amp;")
            .replace('"', "&quot;");
        complete += &format!("<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>");
        offset += len;
        n += 1;
    }
    complete += "</CompleteMultipartUpload>";
    let resp = ctx
        .s3
        .request(Method::POST, Some(key), &[("uploadId", upload)], &[])
        .header("content-length", complete.len())
        .body(complete)
        .send()
        .await
        .map_err(|e| format!("CompleteMultipartUpload: {e}"))?;
    let body = expect_ok("CompleteMultipartUpload", resp)
        .await?
        .text()
        .await
        .map_err(|e| format!("CompleteMultipartUpload: {e}"))?;
    // S3 may answer 200 and report the failure in the body.
    if body.contains("<Error>") {
        return Err(format!(
            "CompleteMultipartUpload: {}",
            xml_value(&body, "Code").unwrap_or_default()
        ));
    }
    Ok(())
}

/// One worker's results.
struct WorkerStats {
    lat: Vec<Latency>,
    ops: [u64; 6],
    bytes: [u64; 6],
    errors: [u64; 6],
}

async fn worker(ctx: Arc<Ctx>, seed: u64) -> WorkerStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut st = WorkerStats {
        lat: OPS.iter().map(|_| Latency::new()).collect(),
        ops: [0; 6],
        bytes: [0; 6],
        errors: [0; 6],
    };
    let mut walk = ListWalk::default();
    let refills = ctx
        .workload
        .weights
        .iter()
        .any(|(op, n)| *n > 0 && matches!(op, Op::Put | Op::Multipart));
    loop {
        if ctx.stop.load(Ordering::Relaxed)
            || ctx.deadline.get().is_none_or(|d| Instant::now() >= *d)
        {
            break;
        }
        if let Some(max) = ctx.max_ops {
            if ctx.started.fetch_add(1, Ordering::Relaxed) >= max {
                break;
            }
        }
        let op = ctx.choose(&mut rng);
        let t = Instant::now();
        match run_op(&ctx, op, &mut rng, &mut walk).await {
            Ok(Outcome::Done(b)) => {
                let i = op.index();
                st.lat[i].record(t.elapsed());
                st.ops[i] += 1;
                st.bytes[i] += b;
                ctx.done.fetch_add(1, Ordering::Relaxed);
                ctx.bytes.fetch_add(b, Ordering::Relaxed);
            }
            Ok(Outcome::DoneMany(n)) => {
                let i = op.index();
                st.lat[i].record(t.elapsed());
                st.ops[i] += n;
                ctx.done.fetch_add(n, Ordering::Relaxed);
            }
            Ok(Outcome::Skipped) => {
                // Uncount it against --ops.
                if ctx.max_ops.is_some() {
                    ctx.started.fetch_sub(1, Ordering::Relaxed);
                }
                if !refills && ctx.pool().objs.is_empty() {
                    // Nothing left to read or delete, and nothing writes.
                    break;
                }
                tokio::task::yield_now().await;
            }
            Err(e) => {
                let n = ctx.errors.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    eprintln!("bench: {e}");
                }
                st.errors[op.index()] += 1;
            }
        }
    }
    st
}

/// This process's user and system CPU seconds so far.
fn rusage() -> (f64, f64) {
    // SAFETY: getrusage writes into the struct we pass; zeroed is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// True once the last `window` per-second samples are all within ±pct% of
/// their mean (warp's rule).
pub fn stable(samples: &[f64], window: usize, pct: f64) -> bool {
    if window == 0 || samples.len() < window {
        return false;
    }
    let w = &samples[samples.len() - window..];
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    mean > 0.0 && w.iter().all(|x| (x - mean).abs() <= mean * pct / 100.0)
}

/// Endpoint, credentials and CA: flags and AWS variables first, then the
/// dev cluster in --data-dir. Also returns the base URL and whether the
/// endpoint is the dev cluster's.
fn connect(args: &LoadArgs) -> Result<(S3, String, bool), LoadError> {
    let setup = LoadError::Setup;
    let (cluster, endpoint) = super::endpoint_of(args.endpoint.as_deref(), &args.data_dir);
    let from_cluster = args.endpoint.is_none() && cluster.is_some();
    let with_scheme = if endpoint.contains("://") {
        endpoint.clone()
    } else {
        format!("http://{endpoint}")
    };
    let bad = |why: &str| LoadError::Usage(format!("--endpoint {endpoint:?}: {why}"));
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(bad(&format!("unsupported scheme {other:?}"))),
    };
    let host = url.host_str().ok_or_else(|| bad("no host"))?;
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err(bad(
            "give only scheme://host:port (buckets are addressed path-style)",
        ));
    }
    let host = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let base = format!("{}://{host}", url.scheme());
    let creds = match (&args.access_key, &args.secret_key) {
        (Some(a), Some(s)) => Some((a.clone(), s.clone())),
        (Some(_), None) | (None, Some(_)) => {
            return Err(LoadError::Usage(
                "give both --access-key and --secret-key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)".into(),
            ))
        }
        _ => crate::dev::load_credentials(&args.data_dir.join("credentials.json"))
            .ok()
            .flatten()
            .map(|c| (c.access_key, c.secret_key)),
    };
    let Some((access_key, secret_key)) = creds else {
        return Err(LoadError::Usage(format!(
            "no credentials: give --access-key/--secret-key, set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
             or point --data-dir at a dev cluster (no {})",
            args.data_dir.join("credentials.json").display()
        )));
    };
    let mut b = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrent.max(1))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(120));
    if https {
        let ca = args.ca_file.clone().or_else(|| {
            from_cluster
                .then(|| cluster.as_ref()?["tls"]["ca"].as_str().map(PathBuf::from))
                .flatten()
        });
        if args.insecure {
            b = b.danger_accept_invalid_certs(true);
        } else if let Some(ca) = ca {
            let tls = kura_pd_client::tls::rustls_client_from_pem(&ca, None)
                .map_err(|e| setup(format!("--ca-file: {e}")))?;
            b = b.use_preconfigured_tls(tls);
        } else {
            b = add_system_roots(b)?;
        }
    }
    let http = b
        .build()
        .map_err(|e| setup(format!("cannot build an HTTP client: {e}")))?;
    Ok((
        S3 {
            http,
            base: base.clone(),
            host,
            signer: Signer {
                access_key,
                secret_key,
                region: args.region.clone(),
            },
            bucket: args.bucket.clone(),
            class: args.storage_class.clone(),
        },
        base,
        from_cluster,
    ))
}

/// The system's CA bundle (reqwest is built without bundled roots).
pub(super) fn add_system_roots(
    mut b: reqwest::ClientBuilder,
) -> Result<reqwest::ClientBuilder, LoadError> {
    for path in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(pem) = std::fs::read(path) {
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| LoadError::Setup(format!("{path}: {e}")))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
            return Ok(b);
        }
    }
    Err(LoadError::Usage(
        "https endpoint: no system CA bundle found; give --ca-file or --insecure".into(),
    ))
}

/// Makes sure the bucket exists; returns the Server header seen.
async fn ensure_bucket(s3: &S3, region: &str) -> Result<Option<String>, LoadError> {
    let server = |r: &reqwest::Response| {
        r.headers()
            .get("server")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let head = s3
        .request(Method::HEAD, None, &[], &[])
        .send()
        .await
        .map_err(|e| LoadError::Setup(format!("cannot reach {}: {e}", s3.base)))?;
    let seen = server(&head);
    match head.status() {
        s if s.is_success() => return Ok(seen),
        StatusCode::NOT_FOUND => {}
        s => {
            return Err(LoadError::Setup(format!(
                "bucket {}: HEAD answered HTTP {s} (wrong credentials or no access?)",
                s3.bucket
            )))
        }
    }
    let body = if region == "us-east-1" {
        String::new()
    } else {
        format!(
            "<CreateBucketConfiguration><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
        )
    };
    let resp = s3
        .request(Method::PUT, None, &[], &[])
        .header("content-length", body.len())
        .body(body)
        .send()
        .await
        .map_err(|e| LoadError::Setup(format!("creating bucket {}: {e}", s3.bucket)))?;
    let seen = seen.or_else(|| server(&resp));
    if resp.status().is_success() || resp.status() == StatusCode::CONFLICT {
        return Ok(seen);
    }
    let msg = expect_ok("CreateBucket", resp)
        .await
        .err()
        .unwrap_or_default();
    Err(LoadError::Setup(format!(
        "creating bucket {}: {msg}",
        s3.bucket
    )))
}

/// Writes `n` objects before the measured phase.
async fn prefill(ctx: &Arc<Ctx>, n: u64, conc: usize, show: bool) -> Result<(), LoadError> {
    let t = Instant::now();
    let failures = AtomicU64::new(0);
    let first = Mutex::new(None::<String>);
    futures::stream::iter(0..n)
        .map(|_| {
            let ctx = ctx.clone();
            async move {
                let mut rng = StdRng::from_entropy();
                let size = ctx.sizes.draw(&mut rng);
                let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
                ctx.s3
                    .put(&ctx.key(id), ctx.payload.body(size), size)
                    .await
                    .map(|_| ctx.add(Obj { id, size }))
            }
        })
        .buffer_unordered(conc)
        .for_each(|r| {
            if let Err(e) = r {
                failures.fetch_add(1, Ordering::Relaxed);
                first
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
            async {}
        })
        .await;
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        let e = first.lock().unwrap_or_else(|p| p.into_inner()).take();
        return Err(LoadError::Setup(format!(
            "prefill: {failed} of {n} PUTs failed, first: {}",
            e.unwrap_or_default()
        )));
    }
    if show {
        eprintln!(
            "bench: prefilled {n} objects in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Deletes every object the run left (unless --keep).
async fn cleanup(ctx: &Arc<Ctx>, conc: usize) -> u64 {
    let objs: Vec<Obj> = std::mem::take(&mut ctx.pool().objs);
    let failed = AtomicU64::new(0);
    futures::stream::iter(objs)
        .map(|o| {
            let ctx = ctx.clone();
            async move {
                let r = ctx
                    .s3
                    .request(Method::DELETE, Some(&ctx.key(o.id)), &[], &[])
                    .send()
                    .await;
                matches!(r, Ok(r) if r.status().is_success())
            }
        })
        .buffer_unordered(conc)
        .for_each(|ok| {
            if !ok {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            async {}
        })
        .await;
    failed.load(Ordering::Relaxed)
}

/// Runs one load benchmark; returns the exit code (1 when any request failed).
/// The processes whose CPU the report states: `--server-pids`, else the dev
/// cluster's when it is the endpoint, else none.
fn server_procs(args: &LoadArgs, dev_cluster: bool) -> Vec<super::cpu::Proc> {
    if !args.server_pids.is_empty() {
        return args
            .server_pids
            .iter()
            .map(|&pid| super::cpu::Proc {
                role: "server".into(),
                pid,
            })
            .collect();
    }
    if !dev_cluster {
        return Vec::new();
    }
    std::fs::read(args.data_dir.join("cluster.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|c| super::cpu::procs(&c))
        .unwrap_or_default()
}

pub async fn run(args: LoadArgs, workload: Workload) -> Result<i32, LoadError> {
    let plan = plan(&args, &workload)?;
    let (s3, base, dev_cluster) = connect(&args)?;
    let show_progress = args.progress || std::io::stderr().is_terminal();

    let limits = if args.no_limits {
        None
    } else {
        let dir = if args.data_dir.is_dir() {
            args.data_dir.clone()
        } else {
            std::env::temp_dir()
        };
        eprintln!(
            "bench: measuring this machine's limits in {} ...",
            dir.display()
        );
        match super::limits::measure(&dir, args.disk_mib) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("bench: measuring limits failed: {e}");
                None
            }
        }
    };

    let server = ensure_bucket(&s3, &args.region).await?;
    let label = args.label.clone().or(server).unwrap_or_else(|| {
        if dev_cluster {
            "Kura".into()
        } else {
            s3.host.clone()
        }
    });
    let weight_sum = workload.weights.iter().map(|(_, n)| n).sum();
    let ctx = Arc::new(Ctx {
        s3,
        payload: Payload::new(args.compressibility),
        sizes: plan.sizes,
        prefix: plan.prefix.clone(),
        weight_sum,
        pool: Mutex::new(Pool::default()),
        next_id: AtomicU64::new(0),
        started: AtomicU64::new(0),
        max_ops: args.ops,
        stop: AtomicBool::new(false),
        deadline: std::sync::OnceLock::new(),
        done: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        list_expect: if workload.weights.iter().any(|(o, _)| *o == Op::List) {
            args.objects
        } else {
            0
        },
        workload,
    });
    if ctx.workload.prefill {
        prefill(&ctx, args.objects, args.concurrent, true).await?;
    }
    // The duration counts from here, not from before the prefill.
    let _ = ctx.deadline.set(Instant::now() + plan.duration);

    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let server_procs = server_procs(&args, dev_cluster);
    let server0 = super::cpu::sample(&server_procs);
    let cpu0 = rusage();
    let t0 = Instant::now();
    let mut seeder = StdRng::from_entropy();
    let tasks: Vec<_> = (0..args.concurrent)
        .map(|_| tokio::spawn(worker(ctx.clone(), seeder.gen())))
        .collect();
    let all_done = futures::future::join_all(tasks);
    tokio::pin!(all_done);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut samples: Vec<f64> = Vec::new();
    let (mut last_ops, mut last_bytes) = (0u64, 0u64);
    let mut autoterminated = false;
    let results = loop {
        tokio::select! {
            r = &mut all_done => break r,
            _ = tick.tick() => {
                let (ops, bytes) = (ctx.done.load(Ordering::Relaxed), ctx.bytes.load(Ordering::Relaxed));
                let rate = (ops - last_ops) as f64;
                samples.push(rate);
                if show_progress {
                    eprint!(
                        "\r{:>6.0} s  {ops} ops  {rate:.0} ops/s  {:.1} MiB/s  {} errors   ",
                        t0.elapsed().as_secs_f64(),
                        (bytes - last_bytes) as f64 / (1 << 20) as f64,
                        ctx.errors.load(Ordering::Relaxed)
                    );
                }
                (last_ops, last_bytes) = (ops, bytes);
                if let Some((window, pct)) = plan.autoterm {
                    if !autoterminated && stable(&samples, window.as_secs().max(2) as usize, pct) {
                        autoterminated = true;
                        ctx.stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    let elapsed = t0.elapsed();
    let cpu1 = rusage();
    let server1 = super::cpu::sample(&server_procs);
    if show_progress {
        eprintln!();
    }

    let mut lat: Vec<Latency> = OPS.iter().map(|_| Latency::new()).collect();
    let (mut ops, mut bytes, mut errors) = ([0u64; 6], [0u64; 6], [0u64; 6]);
    for r in results {
        let st = r.map_err(|e| LoadError::Setup(format!("a worker failed: {e}")))?;
        for i in 0..OPS.len() {
            lat[i].add(&st.lat[i]);
            ops[i] += st.ops[i];
            bytes[i] += st.bytes[i];
            errors[i] += st.errors[i];
        }
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let op_report = |name: &str, ops: u64, bytes: u64, errors: u64, l: &Latency, op: Option<Op>| {
        let mib_s = mib(bytes) / secs;
        let vs_limit = match (limits.as_ref(), op) {
            (Some(l), Some(op)) if ops > 0 => {
                let per_op = (bytes / ops) as usize;
                match op {
                    Op::Put | Op::Multipart => {
                        super::limit_ratio(l, true, per_op, mib_s, ops as f64 / secs, None)
                    }
                    Op::Delete => super::limit_ratio(l, true, 0, 0.0, ops as f64 / secs, None),
                    Op::Get => super::limit_ratio(l, false, per_op, mib_s, ops as f64 / secs, None),
                    Op::Stat | Op::List => String::new(),
                }
            }
            _ => String::new(),
        };
        OpReport {
            op: name.into(),
            ops,
            bytes,
            errors,
            ops_per_s: ops as f64 / secs,
            // A listing's bytes are XML, not object data.
            mib_per_s: if op == Some(Op::List) { 0.0 } else { mib_s },
            latency_ms: l.summary(),
            vs_limit,
        }
    };
    let mut op_reports = Vec::new();
    let mut total_lat = Latency::new();
    let mut data_bytes = 0;
    for (i, op) in OPS.iter().enumerate() {
        if ctx.workload.weights.iter().any(|(o, n)| o == op && *n > 0) {
            op_reports.push(op_report(
                op.name(),
                ops[i],
                bytes[i],
                errors[i],
                &lat[i],
                Some(*op),
            ));
            total_lat.add(&lat[i]);
            if *op != Op::List {
                data_bytes += bytes[i];
            }
        }
    }
    let total_ops: u64 = ops.iter().sum();
    let total_errors: u64 = errors.iter().sum();
    let total = op_report(
        "total",
        total_ops,
        data_bytes,
        total_errors,
        &total_lat,
        None,
    );
    let (user, sys) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    let requests = (total_ops + total_errors).max(1) as f64;
    let report = Report {
        format: report::FORMAT.into(),
        label,
        endpoint: base,
        bucket: args.bucket.clone(),
        benchmark: ctx.workload.name.into(),
        started_unix,
        duration_s: secs,
        concurrent: args.concurrent,
        object_size: plan.sizes.describe(),
        compressibility: args.compressibility,
        autoterminated,
        ops: op_reports,
        total,
        bench_cpu: BenchCpu {
            user_s: user,
            sys_s: sys,
            cores: (user + sys) / secs,
            per_request_us: (user + sys) / requests * 1e6,
            per_mib_ms: if data_bytes > 0 {
                (user + sys) / mib(data_bytes) * 1e3
            } else {
                0.0
            },
        },
        server_cpu: (!server_procs.is_empty()).then(|| {
            ServerCpu::new(
                super::cpu::seconds_by_role(&server_procs, &server0, &server1),
                secs,
                requests,
                mib(data_bytes),
            )
        }),
        limits,
    };
    if let Some(l) = &limits {
        super::print_limits(l);
    }
    report.print();
    if ctx
        .workload
        .weights
        .iter()
        .any(|(o, _)| *o == Op::Multipart)
    {
        println!(
            "multipart: parts of {} (a MULTIPART op is one whole upload)",
            payload::human(ctx.workload.part_size)
        );
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| LoadError::Setup(format!("encoding results: {e}")))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| LoadError::Setup(format!("--json {}: {e}", path.display())))?;
    }
    if !args.keep {
        let left = ctx.pool().objs.len();
        if left > 0 && show_progress {
            eprintln!("bench: deleting the run's {left} objects (--keep keeps them)");
        }
        let failed = cleanup(&ctx, args.concurrent).await;
        if failed > 0 {
            eprintln!(
                "bench: {failed} objects under {} could not be deleted",
                plan.prefix
            );
        }
    }
    Ok(if total_errors > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        for bad in ["", "0s", "-1s", "10x", "s", "1e9h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn autoterm_waits_for_a_full_stable_window() {
        assert!(!stable(&[100.0, 101.0], 3, 7.5));
        assert!(stable(&[10.0, 100.0, 104.0, 97.0], 3, 7.5));
        assert!(!stable(&[100.0, 120.0, 100.0], 3, 7.5));
        assert!(!stable(&[0.0, 0.0, 0.0], 3, 7.5));
    }

    #[test]
    fn xml_values_are_found_and_unescaped() {
        let x = "<R><IsTruncated>true</IsTruncated><NextContinuationToken>a&amp;b=</NextContinuationToken></R>";
        assert_eq!(xml_value(x, "IsTruncated").as_deref(), Some("true"));
        assert_eq!(
            xml_value(x, "NextContinuationToken").as_deref(),
            Some("a&b=")
        );
        assert_eq!(xml_value(x, "UploadId"), None);
    }
}
