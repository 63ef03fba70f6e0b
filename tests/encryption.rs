//! Server-side encryption end to end on `kura dev` (tests/py/encryption.py):
//! SSE-C and SSE-S3 with boto3 and the aws CLI, bucket default encryption,
//! SSE-KMS refused, and a plaintext marker searched for in every file of
//! the data nodes' and metashards' data dirs: absent when written
//! encrypted, present when written in the clear.
//!
//! SSE-C over plain HTTP (decision 0036): `kura dev` listens on 127.0.0.1
//! only, so a second gateway of the same cluster is started here on
//! 0.0.0.0 and the script reaches it at this host's own non-loopback
//! address: every operation carrying an SSE-C key is refused there over
//! HTTP, and accepted over HTTPS (`KURA_TEST_TLS=1`).
mod common;
use std::process::{Child, Command, Stdio};

use common::{Cluster, KURA};

/// A gateway process killed when dropped.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

/// gateway-1's flags with the S3 port on 0.0.0.0:`port` and a fresh status
/// port; the script waits for it to be ready.
fn start_open_gateway(c: &Cluster, port: u16) -> Gateway {
    let argv = c.component("gateway-1").argv;
    let mut args: Vec<String> = argv[1..].to_vec();
    let mut set = |flag: &str, value: String| {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("gateway-1 has no {flag}"));
        args[i + 1] = value;
    };
    set("--listen", format!("0.0.0.0:{port}"));
    set("--status-addr", format!("127.0.0.1:{}", free_port()));
    let log = std::fs::File::create(c.dir.join("logs").join("gateway-open.log")).expect("log");
    let child = Command::new(&argv[0])
        .args(&args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn gateway");
    Gateway(child)
}

#[test]
fn sse_c_sse_s3_bucket_default_and_ciphertext_on_disk() {
    let c = Cluster::must_start();
    assert!(
        c.dir.join("master.key").exists(),
        "kura dev makes a master key under its data dir"
    );
    let port = free_port();
    let _open = start_open_gateway(&c, port);
    let out = c.must_python_env(
        "encryption.py",
        &[("KURA_BIN", KURA), ("KURA_OPEN_PORT", &port.to_string())],
    );
    for line in out.lines() {
        eprintln!("{line}");
    }
    assert!(out.contains("all encryption checks passed"), "{out}");
}
