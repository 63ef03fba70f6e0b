//! `kura dev --tls`: S3 over HTTPS for real clients, mutual TLS on every
//! internal port, and PD's HTTP API behind credentials. The attacker's
//! connections — plaintext, no certificate, a certificate of another CA —
//! are refused on every internal port; the cluster's own certificates work
//! (so each refusal is the certificate's doing, not a dead port).

mod common;

use std::path::Path;
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
    Ours,
}

struct Pems {
    ca: Vec<u8>,
    ours: (Vec<u8>, Vec<u8>),
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
