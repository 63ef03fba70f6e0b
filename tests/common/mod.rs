//! Test kit for end-to-end tests: starts a real `kura dev` cluster in a temp
//! dir on its own ports and drives it with real S3 clients.
//!
//! Helpers follow the `must_*` convention: they panic with context on failure.
//! Polling helpers (`must_become_ready`) wait to a deadline, never sleep-then-assert.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KURA: &str = env!("CARGO_BIN_EXE_kura");

/// A component from `cluster.json`.
#[derive(Debug, Clone)]
pub struct Component {
    pub role: String,
    pub id: String,
    pub zone: String,
    pub grpc: String,
    pub status: String,
    pub pid: u32,
    pub argv: Vec<String>,
}

pub struct Cluster {
    pub dir: PathBuf,
    /// Started with `kura dev --tls` (or the whole suite runs with
    /// KURA_TEST_TLS=1): HTTPS on S3, mutual TLS inside.
    pub tls: bool,
    _tmp: Option<tempfile::TempDir>,
    pub port: u16,
    pub s3: String,
    pub access_key: String,
    pub secret_key: String,
    dev: Option<Child>,
    /// Processes a test restarted by hand (not children of `kura dev`).
    restarted: Vec<Child>,
}

/// Port ranges this test process claimed; the locks live as long as the process.
static PORT_LOCKS: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());

/// Finds a base port with base..base+60 all free, and claims it against other
/// test processes (nextest runs each test in its own process, all at once):
/// a range is taken only under an exclusive `flock` on
/// `$TMPDIR/kura-e2e-ports/<base>.lock`, held until this process exits (the
/// kernel drops it even on a crash). Checking that the ports bind is not
/// enough on its own: two tests could both see a range free before either
/// cluster binds it, and each `kura dev` would then see the other's health.
pub fn free_port_range() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join("kura-e2e-ports");
    std::fs::create_dir_all(&dir).expect("port lock dir");
    // RandomState is randomly keyed per process: unrelated draws in
    // concurrently started processes, unlike a pid-seeded LCG.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let mut x = h.finish();
    for _ in 0..400 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let base = 10_000 + ((x >> 33) % 200) as u16 * 100;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{base}.lock")))
            .expect("port lock file");
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc_flock(lock.as_raw_fd(), LOCK_EX | LOCK_NB) } != 0 {
            continue; // another test process holds this range
        }
        if (base..base + 60).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            PORT_LOCKS.lock().expect("port locks").push(lock);
            return base;
        }
    }
    panic!("no free port range found");
}

const LOCK_EX: i32 = 2;
const LOCK_NB: i32 = 4;

pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Cluster {
    /// Starts a fresh cluster in a new temp dir.
    pub fn must_start() -> Cluster {
        Cluster::must_start_with(&[])
    }

    /// Starts a fresh cluster in a new temp dir with extra `kura dev` flags.
    pub fn must_start_with(dev_args: &[&str]) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("kura-e2e-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut c = Cluster::start_in(&dir, free_port_range(), dev_args);
        c._tmp = Some(tmp);
        c
    }

    /// Starts `kura dev` on `dir` (new or existing) and waits until it serves writes.
    pub fn must_start_in(dir: &Path, port: u16) -> Cluster {
        Cluster::start_in(dir, port, &[])
    }

    fn start_in(dir: &Path, port: u16, dev_args: &[&str]) -> Cluster {
        // A fresh cluster.json (not the previous run's pids) and a fresh
        // dev.out: must_become_ready waits for this run's "cluster ready".
        let _ = std::fs::remove_file(dir.join("cluster.json"));
        let log = std::fs::File::create(dir.join("dev.out")).expect("dev.out");
        let tls = tls_mode() || dev_args.contains(&"--tls");
        let child = Command::new(KURA)
            .args(["dev", "--data-dir"])
            .arg(dir)
            .args(["--port", &port.to_string()])
            .args(dev_args)
            .args(if tls && !dev_args.contains(&"--tls") {
                &["--tls"][..]
            } else {
                &[]
            })
            .env_remove("KURA_ROOT_ACCESS_KEY")
            .env_remove("KURA_ROOT_SECRET_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn kura dev");
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            _tmp: None,
            port,
            s3: format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" }),
            tls,
            access_key: String::new(),
            secret_key: String::new(),
            dev: Some(child),
            restarted: Vec::new(),
        };
        c.must_become_ready(Duration::from_secs(180));
        let creds: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("credentials.json")).expect("credentials.json"),
        )
        .expect("credentials json");
        c.access_key = creds["access_key"]
            .as_str()
            .expect("access_key")
            .to_string();
        c.secret_key = creds["secret_key"]
            .as_str()
            .expect("secret_key")
            .to_string();
        c
    }

    /// Polls until `GET /_kura/health` answers 200 and cluster.json exists.
    pub fn must_become_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let addr = format!("127.0.0.1:{}", self.port);
        while Instant::now() < deadline {
            // `kura dev` writes cluster.json as soon as every pid is known and
            // prints "cluster ready" only once it has seen the cluster serve:
            // a test that killed a process in between would make it give up
            // ("exited during startup") and stop the whole cluster.
            let announced = std::fs::read_to_string(self.dir.join("dev.out"))
                .is_ok_and(|o| o.contains("kura dev: cluster ready"));
            if self.s3_health(&addr) == Some(200)
                && self.dir.join("cluster.json").exists()
                && announced
            {
                return;
            }
            if let Some(dev) = self.dev.as_mut() {
                if let Ok(Some(st)) = dev.try_wait() {
                    panic!("kura dev exited ({st}) before ready:\n{}", self.logs_tail());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("cluster not ready after {timeout:?}:\n{}", self.logs_tail());
    }

    /// `GET /_kura/health` on a gateway's S3 address, over HTTPS in TLS mode.
    pub fn s3_health(&self, addr: &str) -> Option<u16> {
        if self.tls {
            tls_request(addr, &self.dir, "GET", "/_kura/health", None, "").map(|(s, _)| s)
        } else {
            http_status(addr, "/_kura/health")
        }
    }

    /// In TLS mode, makes this test process a holder of the admin
    /// certificate: the gRPC channels it opens through
    /// `kura_pd_client::channel` then pass mutual TLS (an insider: what
    /// such a peer sends is still validated). No-op otherwise.
    pub fn use_cluster_tls(&self) {
        if !self.tls {
            return;
        }
        // Installed once per process: nextest runs each test in its own
        // process, and a test starts one cluster.
        let _ = kura_pd_client::tls::install(&kura_pd_client::tls::TlsPaths {
            ca: self.ca(),
            cert: self.dir.join("tls/admin.pem"),
            key: self.dir.join("tls/admin-key.pem"),
        });
    }

    /// A raw gRPC client of PD member `pd-1`, the way any process on the
    /// network would call it (with the admin certificate in TLS mode once
    /// [`Self::use_cluster_tls`] ran).
    pub fn pd_grpc(&self) -> kura_proto::pd::pd_client::PdClient<kura_pd_client::channel::Channel> {
        kura_proto::pd::pd_client::PdClient::new(
            kura_pd_client::channel::lazy_channel(&self.component("pd-1").grpc)
                .expect("pd channel"),
        )
    }

    /// PD's current placement map (every class, group and data node).
    pub async fn placement_map(
        pd: &mut kura_proto::pd::pd_client::PdClient<kura_pd_client::channel::Channel>,
    ) -> kura_proto::pd::PlacementMap {
        pd.get_placement(kura_proto::pd::GetPlacementRequest { known_version: 0 })
            .await
            .expect("placement")
            .into_inner()
            .map
            .expect("a placement map")
    }

    /// The CA of a TLS cluster (`DIR/tls/ca.pem`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// PD's admin token (`DIR/pd-admin.token`).
    pub fn pd_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("pd-admin.token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    /// `METHOD path` on a PD member's HTTP API with the admin credentials
    /// (token; over TLS with the admin certificate) → (status, body).
    pub fn pd_send(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> Option<(u16, String)> {
        self.pd_send_waiting(addr, method, path, body, Duration::from_secs(5))
    }

    /// [`Cluster::pd_send`] that waits up to `timeout` for the answer (a
    /// call PD answers only once the work is done).
    pub fn pd_send_waiting(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> Option<(u16, String)> {
        let headers = format!(
            "Authorization: Bearer {}\r\nContent-Type: application/json\r\n",
            self.pd_token()
        );
        let admin = (
            self.dir.join("tls/admin.pem"),
            self.dir.join("tls/admin-key.pem"),
        );
        let wire = if self.tls {
            Wire::Tls {
                dir: &self.dir,
                identity: Some(&admin),
            }
        } else {
            Wire::Plain
        };
        exchange(addr, wire, method, path, &headers, body, timeout)
    }

    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for name in ["dev.out"] {
            if let Ok(s) = std::fs::read_to_string(self.dir.join(name)) {
                out += &format!("--- {name}\n{}\n", tail(&s, 40));
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.dir.join("logs")) {
            let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            files.sort();
            for p in files {
                if let Ok(s) = std::fs::read_to_string(&p) {
                    out += &format!("--- {}\n{}\n", p.display(), tail(&s, 15));
                }
            }
        }
        out
    }

    pub fn components(&self) -> Vec<Component> {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.dir.join("cluster.json")).expect("cluster.json"),
        )
        .expect("json");
        v["components"]
            .as_array()
            .expect("components")
            .iter()
            .map(|c| Component {
                role: c["role"].as_str().unwrap_or_default().into(),
                id: c["id"].as_str().unwrap_or_default().into(),
                zone: c["zone"].as_str().unwrap_or_default().into(),
                grpc: c["grpc"].as_str().unwrap_or_default().into(),
                status: c["status"].as_str().unwrap_or_default().into(),
                pid: c["pid"].as_u64().unwrap_or_default() as u32,
                argv: c["argv"]
                    .as_array()
                    .expect("argv")
                    .iter()
                    .map(|a| a.as_str().unwrap_or_default().into())
                    .collect(),
            })
            .collect()
    }

    pub fn component(&self, id: &str) -> Component {
        self.components()
            .into_iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no component {id}"))
    }

    /// kill -9 the process of component `id` (as started by kura dev or restarted by us).
    pub fn must_kill9(&mut self, id: &str) {
        let c = self.component(id);
        if let Some(pos) = self.restarted.iter().position(|ch| ch_matches(ch, &c)) {
            let mut ch = self.restarted.remove(pos);
            let _ = ch.kill();
            let _ = ch.wait();
            return;
        }
        // SAFETY: sending SIGKILL to a pid we started (through kura dev).
        let rc = unsafe { libc_kill(c.pid as i32, 9) };
        assert_eq!(rc, 0, "kill -9 {id} (pid {})", c.pid);
        // Wait until its status port stops answering.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && http_status(&c.status, "/health").is_some() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts component `id` again from its argv in cluster.json.
    pub fn must_restart(&mut self, id: &str) {
        self.must_restart_with(id, &[]);
    }

    /// Starts component `id` again from its argv in cluster.json plus `extra` flags.
    pub fn must_restart_with(&mut self, id: &str, extra: &[&str]) {
        self.spawn_again(id, extra, &[]);
        let c = self.component(id);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http_status(&c.status, "/ready") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{id} not ready after restart:\n{}", self.logs_tail());
    }

    /// Starts component `id` again from its argv in cluster.json plus
    /// `extra` flags and `env`, without waiting for it to become ready.
    pub fn spawn_again(&mut self, id: &str, extra: &[&str], env: &[(&str, &str)]) {
        let c = self.component(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("logs").join(format!("{id}.log")))
            .expect("log");
        let child = Command::new(&c.argv[0])
            .args(&c.argv[1..])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("restart");
        let pid = child.id();
        self.restarted.push(child);
        self.set_pid(id, pid);
    }

    /// Whether this kura binary serves `/fail` (built with `--features failpoints`).
    pub fn has_failpoints(&self) -> bool {
        let pd = self.component("pd-1");
        http_get(&pd.status, "/fail").map(|(code, _)| code) == Some(200)
    }

    /// Arms failpoint `name` with `action` (e.g. `abort`) in the running
    /// process of component `id`, through its status address.
    pub fn must_arm(&self, id: &str, name: &str, action: &str) {
        let status = self.component(id).status;
        let reply = http_send(&status, "PUT", &format!("/fail/{name}"), action);
        assert!(
            matches!(reply, Some((200, _))),
            "PUT /fail/{name} {action} on {id}: {reply:?}"
        );
    }

    /// Waits until the process of component `id` is gone (a failpoint
    /// crashed it): its status port stops answering.
    pub fn must_see_dead(&self, id: &str, secs: u64) {
        let status = self.component(id).status;
        wait_until(&format!("{id} to die"), secs, self, || {
            http_status(&status, "/health").is_none()
        });
    }

    fn set_pid(&self, id: &str, pid: u32) {
        let path = self.dir.join("cluster.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        for c in v["components"].as_array_mut().expect("components") {
            if c["id"] == id {
                c["pid"] = pid.into();
            }
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
    }

    /// Stops `kura dev` (SIGTERM) and every process restarted by hand.
    pub fn stop(&mut self) {
        for mut ch in self.restarted.drain(..) {
            // SAFETY: signalling our own child.
            unsafe { libc_kill(ch.id() as i32, 15) };
            let _ = ch.wait();
        }
        if let Some(mut dev) = self.dev.take() {
            // SAFETY: signalling our own child.
            unsafe { libc_kill(dev.id() as i32, 15) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = dev.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = dev.kill();
            let _ = dev.wait();
        }
    }

    fn aws_env(&self, cmd: &mut Command) {
        let cfg = self.dir.join("aws-config");
        if !cfg.exists() {
            std::fs::write(
                &cfg,
                "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n",
            )
            .expect("aws config");
        }
        if self.tls {
            // The aws CLI and boto3 read AWS_CA_BUNDLE; Python's own ssl
            // (urllib in the drivers) SSL_CERT_FILE; requests REQUESTS_CA_BUNDLE.
            cmd.env("AWS_CA_BUNDLE", self.ca())
                .env("SSL_CERT_FILE", self.ca())
                .env("REQUESTS_CA_BUNDLE", self.ca());
        } else {
            cmd.env_remove("AWS_CA_BUNDLE");
        }
        cmd.env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", &cfg)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_RETRY_MODE", "standard")
            .env("AWS_MAX_ATTEMPTS", "1");
    }

    /// Runs `aws --endpoint-url S3 <args>`.
    pub fn aws(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("aws");
        cmd.arg("--endpoint-url").arg(&self.s3).args(args);
        self.aws_env(&mut cmd);
        cmd.output().expect("run aws CLI")
    }

    /// Like `aws`, but panics unless it succeeds; returns stdout.
    pub fn must_aws(&self, args: &[&str]) -> String {
        let out = self.aws(args);
        assert!(
            out.status.success(),
            "aws {args:?} failed: {}\nstdout: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.logs_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `aws s3api put-object` of the file at `body`; panics unless it succeeds.
    pub fn must_put_file(&self, bucket: &str, key: &str, body: &Path) {
        let body = body.to_str().expect("utf-8 path");
        self.must_aws(&[
            "s3api",
            "put-object",
            "--bucket",
            bucket,
            "--key",
            key,
            "--body",
            body,
        ]);
    }

    /// `aws s3api get-object` into `out`; panics unless it succeeds. Returns the JSON it printed.
    pub fn must_get_file(&self, bucket: &str, key: &str, out: &Path) -> String {
        self.must_aws(&[
            "s3api",
            "get-object",
            "--bucket",
            bucket,
            "--key",
            key,
            out.to_str().expect("utf-8 path"),
        ])
    }

    /// Runs the `kura` binary with `args`; panics unless it exits 0. Returns stdout.
    /// `kura` with PD's admin credentials in the environment (pdctl reads
    /// them from there: KURA_PD_TOKEN, and in TLS mode the CA and the
    /// admin certificate).
    pub fn kura_cmd(&self) -> Command {
        let mut cmd = Command::new(KURA);
        cmd.env("KURA_PD_TOKEN", self.pd_token());
        if self.tls {
            cmd.env("KURA_PD_CACERT", self.ca())
                .env("KURA_PD_CERT", self.dir.join("tls/admin.pem"))
                .env("KURA_PD_KEY", self.dir.join("tls/admin-key.pem"));
        }
        cmd
    }

    /// The leader's (or pd-1's) PD HTTP URL with its scheme.
    pub fn pd_url(&self) -> String {
        format!("{}://{}", self.pd_scheme(), self.pd_http())
    }

    pub fn must_run_kura(&self, args: &[&str]) -> String {
        let out = self.kura_cmd().args(args).output().expect("run kura");
        assert!(
            out.status.success(),
            "kura {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a Python script from tests/py in the background, with the
    /// endpoint and credentials as env and stdout piped.
    pub fn spawn_python(&self, script: &str, args: &[&str]) -> Child {
        let mut cmd = self.python_cmd(script, args);
        cmd.stdout(Stdio::piped());
        cmd.spawn().expect("spawn python3")
    }

    /// `python3 tests/py/SCRIPT ARGS` with the endpoint, credentials, data
    /// dir (`KURA_DIR`) and kura binary (`KURA_BIN`) as env.
    fn python_cmd(&self, script: &str, args: &[&str]) -> Command {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/py")
            .join(script);
        let mut cmd = Command::new("python3");
        cmd.arg(path).args(args);
        self.aws_env(&mut cmd);
        cmd.env("KURA_S3", &self.s3)
            .env("KURA_DIR", &self.dir)
            .env("KURA_BIN", KURA);
        cmd
    }

    /// Starts data node `datanode-N` in `zone` beside the cluster (its
    /// flags copied from datanode-1, fresh ports and data dir).
    pub fn start_extra_datanode(&self, n: u16, zone: &str) -> ExtraNode {
        self.start_extra("datanode", n, zone)
    }

    /// Starts metashard store `metashard-N` in `zone` beside the cluster.
    pub fn start_extra_metashard(&self, n: u16, zone: &str) -> ExtraNode {
        self.start_extra("metashard", n, zone)
    }

    /// Starts `ROLE-N` with ROLE-1's flags, fresh ports and data dir, and
    /// waits until it is ready.
    fn start_extra(&self, role: &str, n: u16, zone: &str) -> ExtraNode {
        let template = self.component(&format!("{role}-1")).argv;
        let free = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
        };
        let (grpc, status) = (free(), free());
        let name = format!("{role}-{n}");
        let dir = self.dir.join(&name);
        let mut argv: Vec<String> = template[1..].to_vec();
        let mut set = |flag: &str, value: String| {
            if let Some(i) = argv.iter().position(|a| a == flag) {
                argv[i + 1] = value;
            }
        };
        set("--data-dir", dir.display().to_string());
        set("--listen", grpc.clone());
        set("--advertise", grpc.clone());
        set("--status-addr", status.clone());
        set("--zone", zone.to_string());
        set("--host", name.clone());
        let mut node = ExtraNode {
            child: None,
            program: template[0].clone(),
            argv,
            log: self.dir.join("logs").join(format!("{name}.log")),
            name,
            grpc,
            status,
        };
        node.restart();
        node
    }

    /// Starts tests/py/writer.py PUTting into `bucket` (which must exist)
    /// for at most `max_secs` seconds.
    pub fn start_writer(&self, bucket: &str, max_secs: &str) -> Writer {
        let (ack, stop) = (
            self.dir.join(format!("acks-{bucket}.log")),
            self.dir.join(format!("stop-{bucket}")),
        );
        let child = self.spawn_python(
            "writer.py",
            &[
                bucket,
                ack.to_str().expect("utf-8 path"),
                stop.to_str().expect("utf-8 path"),
                max_secs,
            ],
        );
        Writer {
            child: Some(child),
            bucket: bucket.to_string(),
            ack,
            stop,
        }
    }

    /// `kura pdctl -u <PD> args…`: whether it exited 0, its stdout as JSON
    /// (Null if not JSON), and its stderr.
    pub fn pdctl(&self, args: &[&str]) -> (bool, serde_json::Value, String) {
        let out = self
            .kura_cmd()
            .arg("pdctl")
            .arg("-u")
            .arg(self.pd_url())
            .args(args)
            .output()
            .expect("run pdctl");
        (
            out.status.success(),
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The component id (e.g. `metashard-2`) of PD's store `store_id`.
    pub fn metashard_by_store(&self, store_id: u64) -> String {
        let stores = self.must_pdctl(&["store"]);
        let addr = stores["stores"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|s| s["store"]["id"].as_u64() == Some(store_id))
            })
            .and_then(|s| s["store"]["address"].as_str())
            .expect("store address")
            .to_string();
        self.components()
            .into_iter()
            .find(|x| x.role == "metashard" && x.grpc == addr)
            .expect("metashard component")
            .id
    }

    /// [`Cluster::pdctl`] that must exit 0; its JSON.
    /// Every region PD lists (`pdctl region`), in key order.
    pub fn regions(&self) -> Vec<serde_json::Value> {
        self.must_pdctl(&["region"])["regions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn must_pdctl(&self, args: &[&str]) -> serde_json::Value {
        let (ok, v, err) = self.pdctl(args);
        assert!(ok, "pdctl {args:?} failed: {err}\n{}", self.logs_tail());
        v
    }

    /// Creates `bucket`, preloads 8 objects and starts tests/py/ec_load.py's
    /// mixed read/write loop on it for at most `secs` seconds.
    pub fn start_mixed_load(&self, bucket: &str, secs: &str) -> MixedLoad {
        self.must_aws(&["s3", "mb", &format!("s3://{bucket}")]);
        let manifest = self.dir.join("manifest");
        let m = manifest.to_str().expect("utf-8 path");
        self.must_python("ec_load.py", &["preload", bucket, m, "8"]);
        let (acks, status, stop) = (
            self.dir.join("acks"),
            self.dir.join("status"),
            self.dir.join("stop"),
        );
        let child = self.spawn_python(
            "ec_load.py",
            &[
                "run",
                bucket,
                m,
                acks.to_str().expect("utf-8 path"),
                status.to_str().expect("utf-8 path"),
                stop.to_str().expect("utf-8 path"),
                secs,
            ],
        );
        MixedLoad {
            child,
            acks,
            status,
            stop,
        }
    }

    /// Ids of every component with `role`, e.g. all metashard stores.
    pub fn ids_of(&self, role: &str) -> Vec<String> {
        self.components()
            .into_iter()
            .filter(|x| x.role == role)
            .map(|x| x.id)
            .collect()
    }

    /// PD's admin HTTP address (`host:port`): the leader's when several PD
    /// members run (`kura dev --pd-replicas 3`) and one leads, else pd-1's.
    pub fn pd_http(&self) -> String {
        if self.ids_of("pd").len() > 1 {
            if let Some(leader) = self.pd_leader() {
                return pd_http_of(&leader).expect("pd --http-listen");
            }
        }
        pd_http_of(&self.component("pd-1")).expect("pd --http-listen")
    }

    /// The PD member that serves as leader right now: the one whose
    /// `/pd/api/v1/members` answers itself (a follower redirects there).
    pub fn pd_leader(&self) -> Option<Component> {
        self.components()
            .into_iter()
            .filter(|c| c.role == "pd")
            .find(|c| {
                let Some(http) = pd_http_of(c) else {
                    return false;
                };
                let Some((200, body)) = self.pd_send(&http, "GET", "/pd/api/v1/members", "") else {
                    return false;
                };
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                v["leader"]["grpc_address"].as_str() == Some(c.grpc.as_str())
            })
    }

    fn pd_scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// Every PD member's HTTP URL, comma-separated (what `pdctl -u` takes).
    pub fn pd_urls(&self) -> String {
        self.components()
            .iter()
            .filter(|c| c.role == "pd")
            .filter_map(pd_http_of)
            .map(|h| format!("{}://{h}", self.pd_scheme()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `GET` of a PD admin path as JSON (Null when PD does not answer).
    pub fn pd_json(&self, path: &str) -> serde_json::Value {
        let (_, body) = self
            .pd_send(&self.pd_http(), "GET", path, "")
            .unwrap_or_default();
        serde_json::from_str(&body).unwrap_or_default()
    }

    /// Runs a Python script from tests/py with the endpoint and credentials as env.
    pub fn python(&self, script: &str, args: &[&str]) -> Output {
        self.python_env(script, args, &[])
    }

    /// `python` with extra environment variables.
    pub fn python_env(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.python_cmd(script, args);
        cmd.envs(env.iter().copied());
        cmd.output().expect("run python3")
    }

    /// `python_env`, panicking with its output unless it succeeds.
    pub fn must_python_env(&self, script: &str, env: &[(&str, &str)]) -> String {
        self.must_succeed(script, self.python_env(script, &[], env))
    }

    pub fn must_python(&self, script: &str, args: &[&str]) -> String {
        self.must_succeed(script, self.python(script, args))
    }

    /// The stdout of a script run that must have succeeded.
    fn must_succeed(&self, script: &str, out: Output) -> String {
        assert!(
            out.status.success(),
            "{script} failed:\nstdout:\n{}\nstderr:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A PD component's HTTP address, from its `--http-listen` flag.
pub fn pd_http_of(c: &Component) -> Option<String> {
    c.argv
        .windows(2)
        .find(|w| w[0] == "--http-listen")
        .map(|w| w[1].clone())
}

fn ch_matches(ch: &Child, c: &Component) -> bool {
    ch.id() == c.pid
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
    #[link_name = "flock"]
    fn libc_flock(fd: i32, op: i32) -> i32;
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Deterministic pseudo-random bytes.
/// Hex of the metadata key prefix of object `key` in the bucket whose id
/// is `bucket_hex` (`keys::object_prefix`), for an ASCII key without NULs.
pub fn object_prefix_hex(bucket_hex: &str, key: &str) -> String {
    let key: String = key.bytes().map(|b| format!("{b:02X}")).collect();
    format!("02{bucket_hex}{key}0000")
}

/// Splits the first region (bucket record | objects, while the cluster has
/// one bucket) in the middle; the split key (`02 <bucket id> enc(key)`)
/// names the bucket id. Returns (bucket id hex, id of the right half).
pub fn bucket_hex_by_split(c: &Cluster) -> (String, u64) {
    let first = c.regions()[0]["id"].as_u64().expect("region id");
    let split = c.must_pdctl(&["operator", "add", "split-region", &first.to_string()]);
    let right = &split["regions"][1];
    let key = right["start_key"].as_str().expect("split key");
    assert!(key.starts_with("02") && key.len() > 18, "{key}");
    (key[2..18].to_string(), right["id"].as_u64().expect("id"))
}

/// Splits the region holding `hex` at `hex`, unless a region starts there.
pub fn split_at(c: &Cluster, hex: &str) {
    let r = c.must_pdctl(&["region", "key", "--hex", hex]);
    if r["start_key"].as_str() == Some(hex) {
        return;
    }
    let id = r["id"].as_u64().expect("region id").to_string();
    c.must_pdctl(&["operator", "add", "split-region", &id, "--key", hex]);
}

pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_add(0x9E3779B97F4A7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `GET http://addr{path}` → (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_send(addr, "GET", path, "")
}

/// `METHOD http://addr{path}` with a text body → (status, body).
pub fn http_send(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    http_send_headers(addr, method, path, "", body)
}

/// Whether the whole suite runs against `kura dev --tls` clusters
/// (`KURA_TEST_TLS=1 make test`).
pub fn tls_mode() -> bool {
    std::env::var("KURA_TEST_TLS").is_ok_and(|v| v == "1")
}

/// [`http_send`] with extra header lines (each ending in CRLF).
pub fn http_send_headers(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Option<(u16, String)> {
    let timeout = Duration::from_secs(5);
    exchange(addr, Wire::Plain, method, path, headers, body, timeout)
}

/// `METHOD https://addr{path}` trusting `dir/tls/ca.pem`, presenting
/// `identity` (certificate, key) if given, with extra header lines.
pub fn tls_request(
    addr: &str,
    dir: &Path,
    method: &str,
    path: &str,
    identity: Option<(PathBuf, PathBuf)>,
    headers: &str,
) -> Option<(u16, String)> {
    let wire = Wire::Tls {
        dir,
        identity: identity.as_ref(),
    };
    exchange(
        addr,
        wire,
        method,
        path,
        headers,
        "",
        Duration::from_secs(5),
    )
}

/// How [`exchange`] reaches its server.
pub enum Wire<'a> {
    Plain,
    /// TLS trusting `dir/tls/ca.pem`, presenting `identity` (certificate,
    /// key) if given.
    Tls {
        dir: &'a Path,
        identity: Option<&'a (PathBuf, PathBuf)>,
    },
}

/// One HTTP/1.0 request on a new connection, with extra header lines (each
/// ending in CRLF), waiting up to `timeout` for the answer → (status, body).
pub fn exchange(
    addr: &str,
    wire: Wire,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    use std::io::Write;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let tcp = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500))
        .ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    match wire {
        Wire::Plain => {
            let mut s = tcp;
            s.write_all(request.as_bytes()).ok()?;
            read_answer(&mut s)
        }
        Wire::Tls { dir, identity } => {
            let cfg = kura_pd_client::tls::rustls_client_from_pem(
                &dir.join("tls/ca.pem"),
                identity.map(|(c, k)| (c.as_path(), k.as_path())),
            )
            .ok()?;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
            let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).ok()?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(request.as_bytes()).ok()?;
            read_answer(&mut s)
        }
    }
}

fn read_answer(s: &mut impl std::io::Read) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    // A TLS peer may close without close_notify: keep what arrived.
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// An extra process started by the test (killed when dropped).
pub struct ExtraNode {
    child: Option<Child>,
    program: String,
    argv: Vec<String>,
    log: PathBuf,
    pub name: String,
    pub grpc: String,
    pub status: String,
}

impl ExtraNode {
    /// SIGKILL, like kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) with the same flags and data dir; waits until ready.
    pub fn restart(&mut self) {
        self.kill9();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.program)
            .args(&self.argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start extra process");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_status(&self.status, "/ready") != Some(200) {
            assert!(Instant::now() < deadline, "{} not ready", self.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ExtraNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A running tests/py/writer.py: PUTs small objects into one bucket until
/// told to stop, logging every acknowledged key (killed when dropped).
pub struct Writer {
    child: Option<Child>,
    bucket: String,
    pub ack: PathBuf,
    stop: PathBuf,
}

impl Writer {
    /// PUTs acknowledged so far.
    pub fn acked(&self) -> usize {
        std::fs::read_to_string(&self.ack)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Waits (at most 90 s) until at least `n` PUTs were acknowledged.
    pub fn wait_acks(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.acked() < n {
            assert!(
                Instant::now() < deadline,
                "writer stalled at {} acknowledged PUTs (waiting for {n})",
                self.acked()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it and reads every acknowledged object back (verify.py must
    /// find 0 bad). Returns the writer's summary ("N acknowledged, M
    /// failed") and verify.py's.
    pub fn finish(mut self, c: &Cluster) -> (String, String) {
        std::fs::write(&self.stop, b"").expect("stop file");
        let child = self.child.take().expect("writer running");
        let out = child.wait_with_output().expect("writer exit");
        let summary = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "writer: {summary}");
        let ack = self.ack.to_str().expect("utf-8 path");
        let verify = c.must_python("verify.py", &[&self.bucket, ack]);
        eprintln!("{}{}", summary.trim_end(), verify);
        assert!(verify.contains(" 0 bad"), "{verify}");
        (summary, verify)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running tests/py/ec_load.py: its acked-PUT log, status file and stop file.
pub struct MixedLoad {
    pub child: Child,
    pub acks: PathBuf,
    pub status: PathBuf,
    pub stop: PathBuf,
}

/// Polls `done` until it holds; panics with the cluster's log tails after `secs`.
pub fn wait_until(what: &str, secs: u64, c: &Cluster, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// tests/py/ec_load.py's status file: reads_ok, reads_bad, read_errors,
/// puts_ok, puts_failed (all 0 before its first step).
pub fn load_status(path: &Path) -> [u64; 5] {
    let v: Vec<u64> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    v.try_into().unwrap_or([0; 5])
}

/// The sum of an unlabelled Prometheus sample over every data node.
pub fn datanode_metric_sum(c: &Cluster, name: &str) -> f64 {
    c.components()
        .iter()
        .filter(|x| x.role == "datanode")
        .filter_map(|x| metric(&x.status, name))
        .sum()
}

/// The value of an unlabelled Prometheus sample `name` at `status` /metrics.
pub fn metric(status: &str, name: &str) -> Option<f64> {
    let (code, body) = http_get(status, "/metrics")?;
    if code != 200 {
        return None;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix(name))
        .find_map(|rest| rest.strip_prefix(' ')?.trim().parse().ok())
}

/// The id of the metashard component that leads the first region, per PD.
pub fn meta_leader_component(c: &Cluster) -> String {
    let pd = c
        .components()
        .into_iter()
        .find(|x| x.role == "pd")
        .expect("pd");
    let cluster: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.dir.join("cluster.json")).expect("cluster.json"))
            .expect("json");
    let http = cluster["components"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["id"] == pd.id.as_str()))
        .and_then(|x| x["http"].as_str())
        .expect("pd http")
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let regions = c
            .pd_send(&http, "GET", "/pd/api/v1/regions", "")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok());
        let stores = c
            .pd_send(&http, "GET", "/pd/api/v1/stores", "")
            .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok());
        if let (Some(r), Some(s)) = (regions, stores) {
            let leader_store = r["regions"][0]["leader"]["store_id"].as_u64();
            let addr = s["stores"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["store"]["id"].as_u64() == leader_store))
                .and_then(|x| x["store"]["address"].as_str().map(String::from));
            if let Some(addr) = addr {
                if let Some(comp) = c
                    .components()
                    .into_iter()
                    .find(|x| x.role == "metashard" && x.grpc == addr)
                {
                    return comp.id;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "PD never reported a region leader"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
