//! The S3 port's front door on a real cluster (gateway/src/front/): what AWS
//! refuses before any operation, POST form caps, slowloris and the caps on
//! connections and in-flight requests, the body-idle and write timeouts,
//! and HTTPS with certificate reload. The attacks are played by
//! tests/py/admission.py with raw sockets and boto3; figures (RSS, cut-off
//! times) are printed.
mod common;
use common::{Cluster, KURA};
use std::path::Path;

/// Restarts the gateway with `flags` and returns its new pid.
fn restart_gateway(c: &mut Cluster, flags: &[&str]) -> u32 {
    c.must_kill9("gateway-1");
    c.must_restart_with("gateway-1", flags);
    c.component("gateway-1").pid
}

/// Runs one phase of tests/py/admission.py and echoes its figures.
fn must_phase(c: &Cluster, args: &[&str], env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("KURA_BIN", KURA));
    let out = c.python_env("admission.py", args, &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "admission.py {args:?} failed:\nstdout:\n{stdout}\nstderr:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs_tail()
    );
    for line in stdout.lines().filter(|l| *l != "ok") {
        eprintln!("{}: {line}", args[0]);
    }
}

/// Invalid Range ignored (200, whole object), also when a SigV4 signature
/// covers it (boto3, aws CLI, presigned URL), garbage AWS4 Authorization →
/// 400 AuthorizationHeaderMalformed, unknown methods → 405
/// MethodNotAllowed, headers over 8 KiB → 400 RequestHeaderSectionTooLarge
/// (also past hyper's own limits: 1,500 fields, 1 MiB heads from 300
/// clients at once, RSS bounded); then unsigned 1 GiB multipart POSTs
/// (declared and chunked) refused after a few MiB with the RSS bounded.
#[test]
fn malformed_input_and_post_forms_are_answered_as_aws_does() {
    let mut c = Cluster::must_start();
    must_phase(&c, &["malformed"], &[]);
    let pid = c.component("gateway-1").pid;
    must_phase(&c, &["header_limits", &pid.to_string()], &[]);
    let pid = restart_gateway(&mut c, &["--max-post-object-bytes", &(8 << 20).to_string()]);
    must_phase(&c, &["post_forms", &pid.to_string()], &[]);
}

/// 2000 idle and 50 byte-per-second connections are cut by a 2 s header
/// timeout while boto3 keeps working; requests beyond the in-flight cap and
/// connections beyond the connection cap are answered 503 SlowDown; a body
/// that stops sending fails with 400 RequestTimeout (a slow, steady one
/// doesn't); a client that stops reading is dropped; HTTP/2 connections
/// that open no request (silent, an unfinished HEADERS, PINGs only) are cut
/// after the header timeout while a long h2 upload is not, and an h2
/// connection over the cap is answered 503 and closed (GOAWAY).
#[test]
fn slowloris_is_cut_off_and_caps_answer_slow_down() {
    let mut c = Cluster::must_start();
    let pid = restart_gateway(
        &mut c,
        &[
            "--header-timeout-secs",
            "2",
            "--body-idle-timeout-secs",
            "2",
            "--write-timeout-secs",
            "2",
            "--max-in-flight",
            "8",
        ],
    );
    must_phase(&c, &["slowloris", &pid.to_string()], &[]);
    must_phase(&c, &["in_flight", "8"], &[]);
    must_phase(&c, &["idle_body"], &[]);
    must_phase(&c, &["write_stall"], &[]);
    // curl's rate limit sends bursts a few seconds apart: a longer body
    // idle timeout than above.
    restart_gateway(&mut c, &["--header-timeout-secs", "2"]);
    must_phase(&c, &["h2", "2"], &[]);
    restart_gateway(&mut c, &["--max-connections", "20"]);
    must_phase(&c, &["conn_cap", "20"], &[]);
}

/// A test CA and two certificates for localhost / 127.0.0.1 it signed.
fn write_test_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "kura admission test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write CA");
    let issuer = Issuer::new(ca, ca_key);
    for name in ["s3", "s3-next"] {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("cert");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write cert");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write key");
    }
}

/// `kura gateway --tls-cert --tls-key`: boto3 (`verify=ca.pem`) and the aws
/// CLI (`--ca-bundle`) over HTTPS, plaintext on the port refused,
/// aws:SecureTransport true, and a new certificate served after SIGHUP
/// while a connection opened before it keeps working.
#[test]
fn https_with_certificate_reload() {
    let mut c = Cluster::must_start();
    let pki = c.dir.join("s3-tls");
    std::fs::create_dir_all(&pki).expect("pki dir");
    write_test_pki(&pki);
    let path = |f: &str| pki.join(f).to_str().expect("utf-8 path").to_string();
    if common::tls_mode() {
        // The gateway serves the cluster's certificate: this test serves its own.
        drop_flags(&c, "gateway-1", &["--tls-cert", "--tls-key"]);
    }
    let pid = restart_gateway(
        &mut c,
        &["--tls-cert", &path("s3.pem"), "--tls-key", &path("s3.key")],
    );
    let https = format!("https://127.0.0.1:{}", c.port);
    must_phase(
        &c,
        &[
            "https",
            &path("ca.pem"),
            &pid.to_string(),
            &path("s3-next.pem"),
            &path("s3-next.key"),
            &path("s3.pem"),
            &path("s3.key"),
        ],
        &[
            ("KURA_HTTPS", https.as_str()),
            ("KURA_HTTPS_CA", path("ca.pem").as_str()),
        ],
    );
}

/// Removes `flags` and their values from a component's argv in
/// cluster.json, which restarts read.
fn drop_flags(c: &Cluster, id: &str, flags: &[&str]) {
    let file = c.dir.join("cluster.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("cluster.json")).expect("json");
    let comps = v["components"].as_array_mut().expect("components");
    let comp = comps.iter_mut().find(|x| x["id"] == id).expect("component");
    let argv: Vec<String> = comp["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect();
    let mut kept = Vec::new();
    let mut skip = false;
    for a in argv {
        if skip {
            skip = false;
        } else if flags.contains(&a.as_str()) {
            skip = true;
        } else {
            kept.push(a);
        }
    }
    comp["argv"] = serde_json::json!(kept);
    std::fs::write(&file, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
}
