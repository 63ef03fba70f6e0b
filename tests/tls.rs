//! `kura dev --tls`: S3 over HTTPS for real clients, mutual TLS on every
//! internal port, and PD's HTTP API behind credentials. The attacker's
//! connections — plaintext, no certificate, a certificate of another CA —
//! are refused on every internal port; the cluster's own certificates work
//! (so each refusal is the certificate's doing, not a dead port).
//!
//! Then, on the same cluster (decision 0046): a data node's certificate is
//! rotated in place (a broken file first, which is ignored) and the SIGHUP'd
//! processes live on; then the admin certificate is revoked with `kura admin
//! tls revoke`, and every internal port and PD's HTTPS API refuse it while
//! node certificates and S3 go on working.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{tls_request, Cluster};
use kura_proto::datanode::data_node_client::DataNodeClient;
use kura_proto::metashard::metashard_client::MetashardClient;
use kura_proto::pd::pd_client::PdClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A client identity: no certificate, one of another CA, or one of ours.
enum Who {
    Plaintext,
    NoCert,
    OtherCa,
    /// The admin certificate.
    Ours,
    /// A node's certificate (metashard-1's).
    Node,
}

struct Pems {
    ca: Vec<u8>,
    ours: (Vec<u8>, Vec<u8>),
    node: (Vec<u8>, Vec<u8>),
    other: (Vec<u8>, Vec<u8>),
}

fn pems(dir: &Path) -> Pems {
    let read = |f: &str| std::fs::read(dir.join("tls").join(f)).expect(f);
    // A CA of our own making, and a node certificate it signed: what an
    // attacker with a valid-looking certificate from elsewhere holds.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Kura dev cluster CA");
    let other_ca = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).expect("params");
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "kura-admin");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf");
    let _ = other_ca;
    Pems {
        ca: read("ca.pem"),
        ours: (read("admin.pem"), read("admin-key.pem")),
        node: (read("metashard-1.pem"), read("metashard-1-key.pem")),
        other: (cert.pem().into_bytes(), key.serialize_pem().into_bytes()),
    }
}

async fn channel(addr: &str, who: &Who, p: &Pems) -> Result<Channel, String> {
    let scheme = if matches!(who, Who::Plaintext) {
        "http"
    } else {
        "https"
    };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5));
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&p.ca));
    ep = match who {
        Who::Plaintext => ep,
        Who::NoCert => ep.tls_config(tls).map_err(|e| e.to_string())?,
        Who::OtherCa => ep
            .tls_config(tls.identity(Identity::from_pem(&p.other.0, &p.other.1)))
            .map_err(|e| e.to_string())?,
        Who::Ours => ep
            .tls_config(tls.identity(Identity::from_pem(&p.ours.0, &p.ours.1)))
            .map_err(|e| e.to_string())?,
        Who::Node => ep
            .tls_config(tls.identity(Identity::from_pem(&p.node.0, &p.node.1)))
            .map_err(|e| e.to_string())?,
    };
    ep.connect().await.map_err(|e| format!("{e:?}"))
}

/// One cheap read-only call on the role's service; Ok when it was answered.
async fn call(role: &str, addr: &str, who: &Who, p: &Pems) -> Result<(), String> {
    call_as(role, addr, who, p, None).await
}

/// [`call`], stamped with `cluster` as the sender's cluster id if given.
async fn call_as(
    role: &str,
    addr: &str,
    who: &Who,
    p: &Pems,
    cluster: Option<u64>,
) -> Result<(), String> {
    let ch = channel(addr, who, p).await?;
    fn req<T>(msg: T, cluster: Option<u64>) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(id) = cluster {
            r.metadata_mut()
                .insert("kura-cluster-id", id.to_string().parse().expect("ascii"));
        }
        r
    }
    let r = match role {
        "pd" => PdClient::new(ch)
            .get_cluster(req(kura_proto::pd::GetClusterRequest {}, cluster))
            .await
            .map(|_| ()),
        "metashard" => MetashardClient::new(ch)
            .region_status(req(
                kura_proto::metashard::RegionStatusRequest::default(),
                cluster,
            ))
            .await
            .map(|_| ()),
        "datanode" => DataNodeClient::new(ch)
            .stat_fragment(req(
                kura_proto::datanode::StatFragmentRequest::default(),
                cluster,
            ))
            .await
            .map(|_| ()),
        other => panic!("no probe for role {other}"),
    };
    use tonic::Code;
    match r {
        Ok(()) => Ok(()),
        // The service's own refusal of an empty request is an answer: the
        // connection was accepted and the request decoded.
        Err(s)
            if matches!(
                s.code(),
                Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition
            ) =>
        {
            Ok(())
        }
        Err(s) => Err(format!("{s:?}")),
    }
}

#[test]
fn a_tls_cluster_serves_real_clients_and_refuses_strangers_on_every_internal_port() {
    let c = Cluster::must_start_with(&["--tls"]);
    assert!(c.s3.starts_with("https://"), "{}", c.s3);
    let cluster: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.dir.join("cluster.json")).expect("cluster.json"))
            .expect("json");
    assert_eq!(cluster["s3"].as_str(), Some(c.s3.as_str()));
    assert!(cluster["tls"]["ca"].as_str().is_some(), "{cluster:#}");

    // aws CLI over HTTPS (AWS_CA_BUNDLE = DIR/tls/ca.pem).
    let body = c.dir.join("tls-body");
    std::fs::write(&body, common::pattern(300_000, 7)).expect("body");
    c.must_aws(&["s3", "mb", "s3://secure"]);
    c.must_put_file("secure", "k", &body);
    let back = c.dir.join("tls-back");
    c.must_get_file("secure", "k", &back);
    assert_eq!(
        std::fs::read(&back).expect("back"),
        common::pattern(300_000, 7)
    );
    // boto3 with verify= the CA.
    c.must_python("tls_client.py", &[]);

    // Plaintext S3 on the HTTPS port: no HTTP answer.
    let s3_addr = format!("127.0.0.1:{}", c.port);
    assert_eq!(common::http_get(&s3_addr, "/_kura/health"), None);

    let p = pems(&c.dir);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ours = rt
        .block_on(async {
            let ch = channel(&c.component("pd-1").grpc, &Who::Ours, &p).await?;
            PdClient::new(ch)
                .get_cluster(kura_proto::pd::GetClusterRequest {})
                .await
                .map_err(|e| e.to_string())
        })
        .expect("PD names its cluster")
        .into_inner()
        .cluster_id;
    let mut checked = 0;
    for comp in c.components() {
        if comp.grpc.is_empty() {
            continue;
        }
        let role = comp.role.as_str();
        rt.block_on(call(role, &comp.grpc, &Who::Ours, &p))
            .unwrap_or_else(|e| panic!("{} refused the cluster's own certificate: {e}", comp.id));
        rt.block_on(call_as(role, &comp.grpc, &Who::Ours, &p, Some(ours)))
            .unwrap_or_else(|e| panic!("{} refused its own cluster id: {e}", comp.id));
        // A message from another cluster (a process pointed at the wrong PD)
        // is refused even with a valid certificate.
        let r = rt.block_on(call_as(role, &comp.grpc, &Who::Ours, &p, Some(ours ^ 1)));
        assert!(
            r.as_ref().is_err_and(|e| e.contains("PermissionDenied")),
            "{} answered another cluster: {r:?}",
            comp.id
        );
        for (who, what) in [
            (Who::Plaintext, "plaintext"),
            (Who::NoCert, "no client certificate"),
            (Who::OtherCa, "another CA's certificate"),
        ] {
            let r = rt.block_on(call(role, &comp.grpc, &who, &p));
            assert!(
                r.is_err(),
                "{} answered a client with {what}: {r:?}",
                comp.id
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} internal ports checked");

    // PD's HTTP API: mutual TLS too; a node certificate reads, only the
    // admin certificate changes.
    let pd_http = c.pd_http();
    assert_eq!(common::http_get(&pd_http, "/pd/api/v1/health"), None);
    assert_eq!(
        tls_request(&pd_http, &c.dir, "GET", "/pd/api/v1/stores", None, ""),
        None,
        "PD HTTP without a client certificate"
    );
    let node = Some((
        c.dir.join("tls/metashard-1.pem"),
        c.dir.join("tls/metashard-1-key.pem"),
    ));
    let (code, _) = tls_request(
        &pd_http,
        &c.dir,
        "GET",
        "/pd/api/v1/stores",
        node.clone(),
        "",
    )
    .expect("PD answers a node certificate");
    assert_eq!(code, 200);
    let (code, body) = tls_request(
        &pd_http,
        &c.dir,
        "DELETE",
        "/pd/api/v1/store/999999",
        node,
        "",
    )
    .expect("answer");
    assert_eq!(
        code, 403,
        "a node certificate may not change things: {body}"
    );
    let (code, body) = c
        .pd_send(&pd_http, "DELETE", "/pd/api/v1/store/999999", "")
        .expect("answer");
    assert_eq!(code, 404, "the admin certificate may (unknown id): {body}");

    // pdctl: with the cluster's credentials it works, without them it fails.
    let stores = c.must_pdctl(&["store"]);
    assert!(stores["count"].as_u64().unwrap_or(0) >= 3, "{stores}");
    let out = std::process::Command::new(common::KURA)
        .args(["pdctl", "-u", &c.pd_url(), "store"])
        .env_remove("KURA_PD_TOKEN")
        .env_remove("KURA_PD_CACERT")
        .output()
        .expect("pdctl");
    assert!(!out.status.success(), "pdctl without credentials succeeded");
    let out = std::process::Command::new(common::KURA)
        .arg("pdctl")
        .arg("--cluster")
        .arg(c.dir.join("cluster.json"))
        .args(["--table", "store"])
        .output()
        .expect("pdctl --cluster");
    assert!(
        out.status.success(),
        "pdctl --cluster: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    rotate_a_node_certificate(&c, &p, &rt);
    revoke_the_admin_certificate(&c, &p, &rt);
}

/// The serial number (hex) of the first certificate of a PEM.
fn pem_serial(pem: &[u8]) -> String {
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem).expect("a certificate");
    der_serial(der.as_ref())
}

fn der_serial(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).expect("x509");
    c.raw_serial_as_string()
}

use rustls::pki_types::pem::PemObject;

fn admin_identity(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("tls/admin.pem"), dir.join("tls/admin-key.pem"))
}

/// A finished TLS handshake with `addr` (the CA of `dir` trusted, `identity`
/// presented), over a blocking socket.
fn tls_connect(
    dir: &Path,
    addr: &str,
    identity: &(PathBuf, PathBuf),
    alpn_h2: bool,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
    let mut cfg = kura_pd_client::tls::rustls_client_from_pem(
        &dir.join("tls/ca.pem"),
        Some((identity.0.as_path(), identity.1.as_path())),
    )
    .map_err(|e| e.to_string())?;
    if alpn_h2 {
        cfg.alpn_protocols = vec![b"h2".to_vec()];
    }
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).map_err(|e| e.to_string())?;
    let mut tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// The serial of the certificate `addr` presents to a new connection.
fn peer_serial(dir: &Path, addr: &str) -> Result<String, String> {
    let s = tls_connect(dir, addr, &admin_identity(dir), false)?;
    let certs = s.conn.peer_certificates().ok_or("no peer certificate")?;
    Ok(der_serial(certs[0].as_ref()))
}

/// A raw HTTP/2 connection, enough to show the server still serves it.
struct H2(rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>);

impl H2 {
    fn open(dir: &Path, addr: &str, identity: &(PathBuf, PathBuf)) -> Result<H2, String> {
        use std::io::Write;
        let mut s = tls_connect(dir, addr, identity, true)?;
        // Connection preface and an empty SETTINGS frame.
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .map_err(|e| e.to_string())?;
        Ok(H2(s))
    }

    /// Sends a PING and waits for its ACK (frames before it are skipped);
    /// false if the connection was closed or refused.
    fn ping(&mut self, n: u8) -> bool {
        use std::io::{Read, Write};
        let mut frame = vec![0, 0, 8, 6, 0, 0, 0, 0, 0];
        frame.extend([n; 8]);
        if self.0.write_all(&frame).is_err() {
            return false;
        }
        for _ in 0..64 {
            let mut head = [0u8; 9];
            if self.0.read_exact(&mut head).is_err() {
                return false;
            }
            let len = ((head[0] as usize) << 16) | ((head[1] as usize) << 8) | head[2] as usize;
            let mut body = vec![0u8; len];
            if self.0.read_exact(&mut body).is_err() {
                return false;
            }
            if head[3] == 6 && head[4] & 1 == 1 && body == [n; 8] {
                return true;
            }
        }
        false
    }
}

/// Polls `f` for up to 20 s (the processes look at their files every 2 s);
/// on failure shows what the cluster's logs say about TLS.
fn within_20s(c: &Cluster, what: &str, mut f: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        if std::time::Instant::now() >= until {
            let mut said = String::new();
            for e in std::fs::read_dir(c.dir.join("logs"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let log = std::fs::read_to_string(e.path()).unwrap_or_default();
                for l in log.lines().filter(|l| l.contains("TLS")) {
                    said.push_str(&format!("{}: {l}\n", e.file_name().to_string_lossy()));
                }
            }
            panic!("{what}: not within 20 s; TLS in the logs:\n{said}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Writes `data` to `path` atomically (as a deploy tool would).
fn replace(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A new key and certificate for `cn`, signed by the dev CA of `dir`.
fn issue(dir: &Path, cn: &str) -> (String, String) {
    let ca_key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(dir.join("tls/ca-key.pem")).expect("CA key"),
    )
    .expect("CA key parses");
    // The CA's name as `kura dev` made it: the issuer of the new certificate.
    // (A fresh name: the default one starts with a common name, which
    // would put the attributes in another order.)
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Kura");
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Kura dev cluster CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut leaf =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
            .expect("params");
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(rcgen::DnType::OrganizationName, "Kura");
    leaf.distinguished_name.push(rcgen::DnType::CommonName, cn);
    leaf.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = leaf.signed_by(&key, &issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

/// (a) A data node's certificate is replaced on disk: new connections get
/// the new one, a connection opened before keeps being served, S3 works.
fn rotate_a_node_certificate(c: &Cluster, p: &Pems, rt: &tokio::runtime::Runtime) {
    let dn = c.component("datanode-1");
    let (cert_path, key_path) = (
        c.dir.join("tls/datanode-1.pem"),
        c.dir.join("tls/datanode-1-key.pem"),
    );
    let old = pem_serial(&std::fs::read(&cert_path).expect("cert"));
    assert_eq!(peer_serial(&c.dir, &dn.grpc).as_deref(), Ok(old.as_str()));
    let mut before = H2::open(&c.dir, &dn.grpc, &admin_identity(&c.dir)).expect("h2");
    assert!(before.ping(1), "a fresh HTTP/2 connection answers PING");

    // A half-written certificate is not taken: the node keeps serving the
    // current one.
    let good_cert = std::fs::read(&cert_path).expect("cert");
    std::fs::write(&cert_path, &good_cert[..good_cert.len() / 2]).expect("truncate");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        peer_serial(&c.dir, &dn.grpc).as_deref(),
        Ok(old.as_str()),
        "a broken certificate file replaced the working certificate"
    );

    // The rotation: a new key and certificate of the same CA.
    let (cert, key) = issue(&c.dir, "datanode-1");
    let new = pem_serial(cert.as_bytes());
    assert_ne!(new, old);
    replace(&key_path, key.as_bytes());
    replace(&cert_path, cert.as_bytes());
    within_20s(c, "the data node presents its new certificate", || {
        peer_serial(&c.dir, &dn.grpc).ok().as_deref() == Some(new.as_str())
    });
    assert!(
        before.ping(2),
        "the connection opened before the rotation was dropped"
    );
    rt.block_on(call("datanode", &dn.grpc, &Who::Ours, p))
        .expect("a new gRPC connection to the rotated node");

    // SIGHUP reloads (it used to kill internal processes): every one lives on.
    for comp in c.components() {
        if comp.grpc.is_empty() {
            continue;
        }
        // SAFETY: kill(2) with a pid and a signal number; no memory involved.
        assert_eq!(
            unsafe { libc::kill(comp.pid as i32, libc::SIGHUP) },
            0,
            "{}",
            comp.id
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    for comp in c.components() {
        if comp.grpc.is_empty() {
            continue;
        }
        rt.block_on(call(&comp.role, &comp.grpc, &Who::Node, p))
            .unwrap_or_else(|e| panic!("{} after SIGHUP: {e}", comp.id));
    }

    // S3 keeps working: an EC write spans every data node, datanode-1 too.
    let body = c.dir.join("rotated-body");
    std::fs::write(&body, common::pattern(1_000_000, 11)).expect("body");
    c.must_put_file("secure", "after-rotation", &body);
    let back = c.dir.join("rotated-back");
    c.must_get_file("secure", "after-rotation", &back);
    assert_eq!(
        std::fs::read(&back).expect("back"),
        common::pattern(1_000_000, 11)
    );
}

/// (b) The admin certificate is revoked: new connections with it fail on
/// every internal port and PD's HTTPS API, and its open connection is
/// closed; node certificates and S3 go on.
fn revoke_the_admin_certificate(c: &Cluster, p: &Pems, rt: &tokio::runtime::Runtime) {
    let admin = admin_identity(&c.dir);
    let serial = pem_serial(&std::fs::read(&admin.0).expect("admin cert"));
    let pd = c.component("pd-1");
    let mut open = H2::open(&c.dir, &pd.grpc, &admin).expect("h2");
    assert!(open.ping(1));

    let revoke = |args: &[&str]| {
        std::process::Command::new(common::KURA)
            .args(["admin", "tls", "revoke", "--cluster"])
            .arg(c.dir.join("cluster.json"))
            .args(args)
            .output()
            .expect("kura admin tls revoke")
    };
    let out = revoke(&["--serial", "not-hex"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = revoke(&["--cert", &admin.0.to_string_lossy()]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let want = serial.replace(':', "").to_uppercase();
    assert!(
        v["revoked"].as_array().is_some_and(|a| a
            .iter()
            .any(|s| s.as_str() == Some(want.strip_prefix("00").unwrap_or(&want)))),
        "{v} does not list {want}"
    );

    within_20s(c, "PD refuses the revoked admin certificate", || {
        rt.block_on(call("pd", &pd.grpc, &Who::Ours, p)).is_err()
    });
    for comp in c.components() {
        if comp.grpc.is_empty() {
            continue;
        }
        let role = comp.role.as_str();
        within_20s(
            c,
            &format!("{} refuses the revoked certificate", comp.id),
            || rt.block_on(call(role, &comp.grpc, &Who::Ours, p)).is_err(),
        );
        rt.block_on(call(role, &comp.grpc, &Who::Node, p))
            .unwrap_or_else(|e| panic!("{} refused a node certificate: {e}", comp.id));
    }
    assert!(
        !open.ping(2),
        "a connection made with the revoked certificate is still served"
    );
    let pd_http = c.pd_http();
    assert_eq!(
        tls_request(
            &pd_http,
            &c.dir,
            "GET",
            "/pd/api/v1/stores",
            Some(admin),
            ""
        ),
        None,
        "PD HTTP answered the revoked admin certificate"
    );
    let node = Some((
        c.dir.join("tls/metashard-1.pem"),
        c.dir.join("tls/metashard-1-key.pem"),
    ));
    let (code, _) = tls_request(&pd_http, &c.dir, "GET", "/pd/api/v1/stores", node, "")
        .expect("PD answers a node certificate");
    assert_eq!(code, 200);

    // Everything else still serves.
    let back = c.dir.join("revoked-back");
    c.must_get_file("secure", "after-rotation", &back);
    assert_eq!(
        std::fs::read(&back).expect("back"),
        common::pattern(1_000_000, 11)
    );
    let body = c.dir.join("revoked-body");
    std::fs::write(&body, common::pattern(200_000, 12)).expect("body");
    c.must_put_file("secure", "after-revocation", &body);
}

#[test]
fn pd_http_api_needs_the_admin_token_to_change_things() {
    if common::tls_mode() {
        return; // the TLS test above covers certificates
    }
    let c = Cluster::must_start();
    let pd_http = c.pd_http();
    assert_eq!(
        common::http_get(&pd_http, "/pd/api/v1/stores").map(|(s, _)| s),
        Some(401)
    );
    let stores = c.must_pdctl(&["store"]);
    let id = stores["stores"][0]["store"]["id"]
        .as_u64()
        .expect("a store id");
    let path = format!("/pd/api/v1/store/{id}");
    assert_eq!(
        common::http_send(&pd_http, "DELETE", &path, "").map(|(s, _)| s),
        Some(401),
        "deleting a store without a credential"
    );
    let wrong = "Authorization: Bearer not-the-token-at-all\r\n";
    assert_eq!(
        common::http_send_headers(&pd_http, "DELETE", &path, wrong, "").map(|(s, _)| s),
        Some(401)
    );
    // The store is still there and up.
    let stores = c.must_pdctl(&["store"]);
    assert!(
        stores["stores"]
            .as_array()
            .expect("stores")
            .iter()
            .any(|s| s["store"]["id"] == id && s["store"]["state_name"] == "Up"),
        "{stores}"
    );
    let out = std::process::Command::new(common::KURA)
        .args(["pdctl", "-u", &c.pd_url(), "store"])
        .env_remove("KURA_PD_TOKEN")
        .output()
        .expect("pdctl");
    assert!(!out.status.success(), "pdctl without the token succeeded");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
