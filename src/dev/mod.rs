//! `kura dev`: a whole local cluster as child processes of this binary.
//!
//! 1 PD (or 3 PD members with `--pd-replicas 3`), 3 metashard stores (zones z1–z3), 6 data nodes (2 per zone) and one
//! gateway, talking real gRPC over loopback, with data under `--data-dir`.
//! Writes `DIR/cluster.json` (every process's role, id, zone, addresses, pid,
//! data dir and exact argv), waits until the gateway says the cluster can serve
//! writes, then supervises: a child that dies is reported, never restarted
//! (tests kill and restart processes on purpose). SIGINT/SIGTERM stops every
//! child, gateway first and PD last.

pub(crate) mod certs;
mod credentials;
pub mod layout;
mod probe;

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use layout::{ClusterFile, Component};

pub use credentials::{load as load_credentials, random_token, write_secret_file, Credentials};

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Directory holding every process's data, logs, credentials and cluster.json.
    #[arg(long, default_value = "./kura-data")]
    pub data_dir: PathBuf,
    /// S3 port on 127.0.0.1. Internal ports are derived from it (port+1 .. port+50).
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// Seconds to wait for the cluster to become ready before giving up.
    #[arg(long, default_value_t = 120)]
    pub ready_timeout: u64,
    /// Data nodes' repair pass interval (healing, orphan GC), in seconds.
    #[arg(long, default_value_t = 5)]
    pub repair_interval_secs: u64,
    /// Bodies younger than this are not healed, in seconds.
    #[arg(long, default_value_t = 10)]
    pub heal_after_secs: u64,
    /// Unreferenced bodies older than this are deleted by orphan GC, in
    /// seconds; the gateway's commit deadline is half of it.
    #[arg(long, default_value_t = 3600)]
    pub orphan_after_secs: u64,
    /// Seconds between the starts of two full scrub passes on each data node
    /// (the first pass starts after min(this, 30 s)).
    #[arg(long, default_value_t = 3600)]
    pub scrub_interval_secs: u64,
    /// PD: least seconds between two placement-map steps that move slots.
    #[arg(long, default_value_t = 10)]
    pub rebalance_interval_secs: u64,
    /// PD: most slots moved per storage class in one step.
    #[arg(long, default_value_t = 8)]
    pub max_moves_per_step: usize,
    /// Metashard: split a region automatically above this many metadata keys.
    #[arg(long, default_value_t = 200_000)]
    pub region_split_keys: u64,
    /// Metashard: ... or above this many MiB of metadata.
    #[arg(long, default_value_t = 96)]
    pub region_split_size_mb: u64,
    /// Metashard: never split a region automatically below this many keys.
    #[arg(long, default_value_t = 1000)]
    pub region_split_min_keys: u64,
    /// Metashard: least seconds between two automatic splits of one region.
    #[arg(long, default_value_t = 10)]
    pub region_split_interval_secs: u64,
    /// Metashard: split a region whose leader sees this many requests per
    /// second for 3 s in a row, where its load divides evenly (0: never by load).
    #[arg(long, default_value_t = 3000)]
    pub region_split_load_qps: u64,
    /// PD: regions that split or merged less than this many seconds ago are
    /// not merged automatically (small quiet neighbours merge after that).
    #[arg(long, default_value_t = 3600)]
    pub split_merge_interval_secs: u64,
    /// PD: a metashard store or data node silent this long is Down (its
    /// region peers are re-created elsewhere when a store in a fitting zone
    /// exists).
    #[arg(long, default_value_t = 30)]
    pub max_store_down_secs: u64,
    /// PD members: 1 (one PD process) or 3 (a replicated PD, one Raft group;
    /// every other process is given all three endpoints).
    #[arg(long, default_value_t = 1, value_parser = parse_pd_replicas)]
    pub pd_replicas: usize,
    /// Metashard: applied entries kept in a region's Raft log before it is
    /// compacted (a follower further behind gets a snapshot).
    #[arg(long, default_value_t = 1000)]
    pub log_gc_threshold: u64,
    /// Metashard: seconds between a region leader's periodic heartbeats to
    /// PD (sizes and read/write flow; hot-region scheduling reacts after two).
    #[arg(long, default_value_t = 10)]
    pub region_heartbeat_secs: u64,
    /// S3 gateways to run (1-4): the first on PORT, the others on PORT+51,
    /// PORT+53, PORT+55 (each one's address is in cluster.json as "s3").
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=layout::MAX_GATEWAYS as i64))]
    pub gateways: u8,
    /// Gateways: seconds in a lifecycle "day" (rules' Days and
    /// NoncurrentDays count in these; shorten it to test lifecycle rules).
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub lifecycle_day_secs: u64,
    /// Gateways: seconds between the end of a region's lifecycle pass and
    /// the start of its next one.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub lifecycle_interval_secs: u64,
    /// Gateways: most lifecycle actions per second, per gateway (0 = unpaced).
    #[arg(long, default_value_t = 100)]
    pub lifecycle_ops_per_sec: u32,
    /// Secure the cluster with TLS: a local CA and a certificate per process
    /// under DIR/tls/ (made here), mutual TLS on every internal connection,
    /// HTTPS on the S3 port. Clients trust DIR/tls/ca.pem (aws --ca-bundle);
    /// cluster.json's "tls" names the CA and the admin certificate.
    #[arg(long)]
    pub tls: bool,
    /// Data nodes' --direct-io: auto (O_DIRECT segment writes where the
    /// filesystem has it), on, or off (through the page cache).
    #[arg(long, default_value_t = kura_datanode::DirectIo::Auto)]
    pub direct_io: kura_datanode::DirectIo,
}

fn parse_pd_replicas(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n @ (1 | 3)) => Ok(n),
        _ => Err(format!("--pd-replicas must be 1 or 3, got {s:?}")),
    }
}

impl DevArgs {
    pub fn tuning(&self) -> layout::Tuning {
        layout::Tuning {
            repair_interval_secs: self.repair_interval_secs,
            heal_after_secs: self.heal_after_secs,
            orphan_after_secs: self.orphan_after_secs,
            scrub_interval_secs: self.scrub_interval_secs,
            rebalance_interval_secs: self.rebalance_interval_secs,
            max_moves_per_step: self.max_moves_per_step,
            region_split_keys: self.region_split_keys,
            region_split_size_mb: self.region_split_size_mb,
            region_split_min_keys: self.region_split_min_keys,
            region_split_interval_secs: self.region_split_interval_secs,
            region_split_load_qps: self.region_split_load_qps,
            split_merge_interval_secs: self.split_merge_interval_secs,
            max_store_down_secs: self.max_store_down_secs,
            pd_replicas: self.pd_replicas,
            gateways: self.gateways as usize,
            lifecycle_day_secs: self.lifecycle_day_secs,
            lifecycle_interval_secs: self.lifecycle_interval_secs,
            lifecycle_ops_per_sec: self.lifecycle_ops_per_sec,
            log_gc_threshold: self.log_gc_threshold,
            region_heartbeat_secs: self.region_heartbeat_secs,
            tls: self.tls,
            direct_io: self.direct_io,
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("another `kura dev` is already running on {0}")]
    AlreadyRunning(PathBuf),
    #[error("the cluster did not become ready within {0} s; see the logs under {1}")]
    NotReady(u64, PathBuf),
    #[error("component {0} exited during startup ({1}); see {2}")]
    ChildExited(String, String, PathBuf),
    #[error("{0} is already in use (another cluster on these ports?); pick another --port")]
    PortInUse(String),
}

fn io<T>(what: impl Into<String>, r: std::io::Result<T>) -> Result<T, DevError> {
    r.map_err(|e| DevError::Io(what.into(), e))
}

/// Holds an exclusive lock on `DIR/dev.lock` for the life of `kura dev`.
fn lock_dir(dir: &Path) -> Result<File, DevError> {
    let path = dir.join("dev.lock");
    let f = io(path.display().to_string(), File::create(&path))?;
    // SAFETY: flock on an fd we own; non-blocking.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(DevError::AlreadyRunning(dir.to_path_buf()));
    }
    Ok(f)
}

fn spawn(c: &Component, logs: &Path) -> Result<Child, DevError> {
    let log_path = logs.join(format!("{}.log", c.id));
    let log = io(
        log_path.display().to_string(),
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path),
    )?;
    let log2 = io("log file", log.try_clone())?;
    let mut cmd = Command::new(&c.argv[0]);
    cmd.args(&c.argv[1..])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: prctl is async-signal-safe. Children die with `kura dev` even if it
    // is killed with SIGKILL, so no orphaned cluster keeps ports busy.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    io(format!("starting {}", c.id), cmd.spawn())
}

fn write_cluster_file(path: &Path, cf: &ClusterFile) -> Result<(), DevError> {
    let tmp = path.with_extension("json.tmp");
    let body =
        serde_json::to_vec_pretty(cf).map_err(|e| DevError::Io("cluster.json".into(), e.into()))?;
    io("cluster.json", std::fs::write(&tmp, body))?;
    io("cluster.json", std::fs::rename(&tmp, path))
}

/// Runs the dev cluster until SIGINT/SIGTERM. Returns the process exit code.
pub fn run(args: DevArgs) -> Result<(), DevError> {
    io(
        args.data_dir.display().to_string(),
        std::fs::create_dir_all(&args.data_dir),
    )?;
    let dir = io("data dir", args.data_dir.canonicalize())?;
    let _lock = lock_dir(&dir)?;
    let logs = dir.join("logs");
    io("logs dir", std::fs::create_dir_all(&logs))?;

    let creds_path = dir.join("credentials.json");
    let (creds, source) = io("credentials", credentials::resolve(&creds_path))?;
    io(
        "cluster key",
        credentials::resolve_cluster_key(&dir.join(layout::CLUSTER_KEY_FILE)),
    )?;
    io(
        "master key",
        credentials::resolve_master_key(&dir.join(layout::MASTER_KEY_FILE)),
    )?;

    let exe = io("current exe", std::env::current_exe())?
        .display()
        .to_string();
    let mut components = layout::plan(&exe, &dir, args.port, "127.0.0.1", &args.tuning());
    let pd_token_file = dir.join(layout::PD_ADMIN_TOKEN_FILE);
    io(
        "PD admin token",
        credentials::resolve_secret(&pd_token_file, credentials::random_token),
    )?;
    let tls = match args.tls {
        false => None,
        true => {
            let t = io(
                "TLS certificates",
                certs::resolve(&dir, &components_ids(&components)),
            )?;
            Some(layout::TlsFiles {
                ca: t.ca,
                admin_cert: t.admin_cert,
                admin_key: t.admin_key,
            })
        }
    };
    let scheme = if args.tls { "https" } else { "http" };
    // Readiness is probed over these ports: if another process holds them, the
    // probes would answer for it. Refuse to start instead.
    let s3_addr = format!("127.0.0.1:{}", args.port);
    let addrs = components
        .iter()
        .flat_map(|c| [Some(&c.grpc), Some(&c.status), c.http.as_ref()])
        .flatten()
        .chain([&s3_addr]);
    for addr in addrs.filter(|a| !a.is_empty()) {
        if std::net::TcpListener::bind(addr.as_str()).is_err() {
            return Err(DevError::PortInUse(addr.clone()));
        }
    }
    for c in &components {
        io(
            c.data_dir.display().to_string(),
            std::fs::create_dir_all(&c.data_dir),
        )?;
    }

    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let mut children: Vec<(usize, Child)> = Vec::new();
    let cluster_file = |components: &[Component]| ClusterFile {
        s3: format!("{scheme}://127.0.0.1:{}", args.port),
        pd_http: format!(
            "{scheme}://{}",
            components[0].http.clone().unwrap_or_default()
        ),
        credentials_file: creds_path.clone(),
        pd_token_file: Some(pd_token_file.clone()),
        tls: tls.clone(),
        components: components.to_vec(),
    };
    let deadline = Instant::now() + Duration::from_secs(args.ready_timeout);
    // cluster.json is written as soon as every pid is known, so a slow start
    // can be inspected (and its processes found) before it is ready.
    let result = spawn_all(&args, deadline, &logs, &mut components, &mut children)
        .and_then(|()| write_cluster_file(&dir.join("cluster.json"), &cluster_file(&components)))
        .and_then(|()| {
            wait_ready(
                &args,
                deadline,
                &dir,
                tls.as_ref(),
                &components,
                &mut children,
            )
        });
    match result {
        Ok(()) => {
            print_banner(&cluster_file(&components), &creds, source, &dir);
            supervise(&components, &mut children);
        }
        Err(e) => {
            stop_all(&components, &mut children);
            return Err(e);
        }
    }
    stop_all(&components, &mut children);
    println!("kura dev: stopped");
    Ok(())
}

/// Starts every component in plan order; PD first, waited for, since every
/// other process registers with it.
fn spawn_all(
    args: &DevArgs,
    deadline: Instant,
    logs: &Path,
    components: &mut [Component],
    children: &mut Vec<(usize, Child)>,
) -> Result<(), DevError> {
    for (i, c) in components.iter_mut().enumerate() {
        let child = spawn(c, logs)?;
        c.pid = child.id();
        children.push((i, child));
        if c.role == "pd" {
            wait_until(deadline, children, vec![c.id.clone()], || {
                probe::http_ok(&c.status, "/ready")
            })
            .map_err(|e| e.unwrap_or(DevError::NotReady(args.ready_timeout, logs.to_path_buf())))?;
        }
    }
    Ok(())
}

/// Waits until the gateway says the cluster can take writes, with every child
/// still running.
fn wait_ready(
    args: &DevArgs,
    deadline: Instant,
    dir: &Path,
    tls: Option<&layout::TlsFiles>,
    components: &[Component],
    children: &mut [(usize, Child)],
) -> Result<(), DevError> {
    let ids = components_ids(components);
    let gateways: Vec<&str> = components
        .iter()
        .filter(|c| c.role == "gateway")
        .filter_map(|c| c.s3.as_deref())
        .collect();
    let tls = match tls {
        None => None,
        Some(t) => Some(std::sync::Arc::new(io(
            "TLS CA",
            kura_pd_client::tls::rustls_client_from_pem(&t.ca, None).map_err(std::io::Error::other),
        )?)),
    };
    wait_until(deadline, children, ids, || {
        gateways
            .iter()
            .all(|url| probe::url_status(url, "/_kura/health", tls.as_ref()) == Some(200))
    })
    .map_err(|e| e.unwrap_or(DevError::NotReady(args.ready_timeout, dir.join("logs"))))
}

fn components_ids(c: &[Component]) -> Vec<String> {
    c.iter().map(|c| c.id.clone()).collect()
}

/// Polls `ok` until it holds, a child exits (Err(Some)), the deadline passes
/// or a stop signal arrives (Err(None)).
fn wait_until(
    deadline: Instant,
    children: &mut [(usize, Child)],
    ids: Vec<String>,
    mut ok: impl FnMut() -> bool,
) -> Result<(), Option<DevError>> {
    loop {
        if ok() {
            return Ok(());
        }
        for (i, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let id = ids
                    .get(*i)
                    .cloned()
                    .unwrap_or_else(|| format!("component #{i}"));
                return Err(Some(DevError::ChildExited(
                    id.clone(),
                    status.to_string(),
                    PathBuf::from(format!("logs/{id}.log")),
                )));
            }
        }
        if STOP.load(Ordering::SeqCst) || Instant::now() > deadline {
            return Err(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_banner(cf: &ClusterFile, creds: &Credentials, source: &str, dir: &Path) {
    println!("kura dev: cluster ready");
    println!("  S3 endpoint:   {}", cf.s3);
    println!("  access key:    {}", creds.access_key);
    println!(
        "  secret key:    {}   ({source}; saved in {})",
        creds.secret_key,
        cf.credentials_file.display()
    );
    let kura = cf
        .components
        .first()
        .map(|c| c.argv[0].as_str())
        .unwrap_or("kura");
    // Every PD member's URL: pdctl tries them in turn (followers redirect).
    let pd_urls = cf
        .components
        .iter()
        .filter(|c| c.role == "pd")
        .filter_map(|c| {
            let scheme = if cf.tls.is_some() { "https" } else { "http" };
            c.http.as_ref().map(|h| format!("{scheme}://{h}"))
        })
        .collect::<Vec<_>>()
        .join(",");
    let cluster = dir.join("cluster.json");
    println!(
        "  PD admin API:  {pd_urls}   ({kura} pdctl --cluster {} --table store)",
        cluster.display()
    );
    if let Some(t) = &cf.tls {
        println!(
            "  TLS CA:        {}   (aws --ca-bundle, boto3 verify=)",
            t.ca.display()
        );
    }
    println!("  cluster file:  {}", cluster.display());
    let more: Vec<&str> = cf
        .components
        .iter()
        .filter(|c| c.role == "gateway")
        .filter_map(|c| c.s3.as_deref())
        .filter(|s| *s != cf.s3)
        .collect();
    if !more.is_empty() {
        println!("  more gateways: {}", more.join(" "));
    }
    println!(
        "  admin:         {kura} admin --cluster {} --table user list",
        dir.join("cluster.json").display()
    );
    println!("  logs:          {}", dir.join("logs").display());
    println!();
    println!(
        "  export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_DEFAULT_REGION=us-east-1",
        creds.access_key, creds.secret_key
    );
    let ca_bundle = cf
        .tls
        .as_ref()
        .map(|t| format!(" --ca-bundle {}", t.ca.display()))
        .unwrap_or_default();
    println!(
        "  aws --endpoint-url {}{ca_bundle} s3 mb s3://my-bucket",
        cf.s3
    );
    println!();
    println!("Ctrl-C stops the cluster; `kura dev` on the same --data-dir brings it back.");
}

fn supervise(components: &[Component], children: &mut [(usize, Child)]) {
    let mut reported = vec![false; components.len()];
    while !STOP.load(Ordering::SeqCst) {
        for (i, child) in children.iter_mut() {
            if reported[*i] {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                reported[*i] = true;
                eprintln!(
                    "kura dev: {} exited ({status}); not restarting it",
                    components[*i].id
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops children in reverse start order (gateway first, PD last): SIGTERM,
/// then SIGKILL after a grace period.
fn stop_all(components: &[Component], children: &mut Vec<(usize, Child)>) {
    for (i, child) in children.iter_mut().rev() {
        if let Ok(None) = child.try_wait() {
            // SAFETY: signalling a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        eprintln!(
                            "kura dev: {} did not stop in time; killing it",
                            components[*i].id
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
    children.clear();
}
