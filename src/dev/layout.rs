//! Where each process of a `kura dev` cluster listens and keeps its data.
//!
//! Every address derives from the S3 port, so several dev clusters (tests run
//! them side by side) never collide: PD at port+1..+3 (members 2 and 3 of a
//! replicated PD at port+4..+6 and port+7..+9), metashard stores at
//! port+10.., data nodes at port+30.., the gateway's status at port+50
//! (gateway i > 1 of `--gateways`: S3 at port+47+2i, status at port+48+2i).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const METASHARD_STORES: usize = 3;
pub const DATA_NODES: usize = 6;
pub const ZONES: [&str; 3] = ["z1", "z2", "z3"];
/// Most PD members `kura dev` can lay out (ports port+1..+9).
pub const MAX_PD_REPLICAS: usize = 3;
/// Most gateways `kura dev` can lay out (ports up to port+56).
pub const MAX_GATEWAYS: usize = 4;
/// The cluster key every gateway seals access-key secrets with.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";
/// The master key every gateway wraps SSE-S3 data keys with (base64).
pub const MASTER_KEY_FILE: &str = "master.key";

/// One process of the cluster, as written to `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Component {
    pub role: String,
    pub id: String,
    pub zone: String,
    pub grpc: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub http: Option<String>,
    /// Gateways only: the S3 endpoint URL.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub s3: Option<String>,
    pub pid: u32,
    pub data_dir: PathBuf,
    pub argv: Vec<String>,
}

/// The TLS files of cluster.json's `"tls"` (paths).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterFile {
    pub s3: String,
    pub pd_http: String,
    pub credentials_file: PathBuf,
    /// PD's admin token (pdctl --cluster sends it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pd_token_file: Option<PathBuf>,
    /// With `kura dev --tls`: the CA to trust and the admin's client certificate.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tls: Option<TlsFiles>,
    pub components: Vec<Component>,
}

/// Background-work timings passed to the data nodes and the gateway.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub repair_interval_secs: u64,
    pub heal_after_secs: u64,
    pub orphan_after_secs: u64,
    pub scrub_interval_secs: u64,
    pub rebalance_interval_secs: u64,
    pub max_moves_per_step: usize,
    pub region_split_keys: u64,
    pub region_split_size_mb: u64,
    pub region_split_min_keys: u64,
    pub region_split_interval_secs: u64,
    pub region_split_load_qps: u64,
    pub split_merge_interval_secs: u64,
    pub max_store_down_secs: u64,
    /// PD members: 1 (a single PD) or 3 (one Raft group).
    pub pd_replicas: usize,
    pub log_gc_threshold: u64,
    pub region_heartbeat_secs: u64,
    /// S3 gateways (1..=MAX_GATEWAYS).
    pub gateways: usize,
    /// The gateways' lifecycle day, pass interval and pace (docs/decisions/0032).
    pub lifecycle_day_secs: u64,
    pub lifecycle_interval_secs: u64,
    pub lifecycle_ops_per_sec: u32,
    /// Mutual TLS on every internal connection and HTTPS on the S3 port,
    /// with the certificates of `DIR/tls/` (`certs.rs`).
    pub tls: bool,
    /// The data nodes' `--direct-io`.
    pub direct_io: kura_datanode::DirectIo,
}

/// The token that may change things through PD's HTTP API (pdctl).
pub const PD_ADMIN_TOKEN_FILE: &str = "pd-admin.token";

/// The planned processes, before they start (pid 0).
pub fn plan(exe: &str, data_dir: &Path, port: u16, host: &str, t: &Tuning) -> Vec<Component> {
    let addr = |off: u16| format!("{host}:{}", port + off);
    let replicas = t.pd_replicas.clamp(1, MAX_PD_REPLICAS);
    // Member i: gRPC at +1+3i, HTTP at +2+3i, status at +3+3i.
    let pd_addrs: Vec<(String, String, String)> = (0..replicas as u16)
        .map(|i| (addr(1 + 3 * i), addr(2 + 3 * i), addr(3 + 3 * i)))
        .collect();
    let pd_grpc = pd_addrs
        .iter()
        .map(|(g, _, _)| g.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let peers = pd_addrs
        .iter()
        .enumerate()
        .map(|(i, (g, h, _))| format!("{}={g}@{h}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut out = Vec::new();

    for (i, (grpc, http, status)) in pd_addrs.iter().enumerate() {
        // A single PD keeps the `pd` directory earlier clusters have.
        let pd_dir = if replicas == 1 {
            data_dir.join("pd")
        } else {
            data_dir.join(format!("pd-{}", i + 1))
        };
        let mut argv = vec![
            exe.into(),
            "pd".into(),
            "--data-dir".into(),
            pd_dir.display().to_string(),
            "--listen".into(),
            grpc.clone(),
            "--http-listen".into(),
            http.clone(),
            "--status-addr".into(),
            status.clone(),
            "--expected-data-nodes".into(),
            DATA_NODES.to_string(),
            "--rebalance-interval-secs".into(),
            t.rebalance_interval_secs.to_string(),
            "--max-moves-per-step".into(),
            t.max_moves_per_step.to_string(),
            "--split-merge-interval-secs".into(),
            t.split_merge_interval_secs.to_string(),
            "--max-store-down-secs".into(),
            t.max_store_down_secs.to_string(),
        ];
        if replicas > 1 {
            argv.extend([
                "--peers".into(),
                peers.clone(),
                "--member-id".into(),
                (i + 1).to_string(),
            ]);
        }
        out.push(Component {
            role: "pd".into(),
            id: format!("pd-{}", i + 1),
            zone: String::new(),
            grpc: grpc.clone(),
            status: status.clone(),
            http: Some(http.clone()),
            s3: None,
            pid: 0,
            data_dir: pd_dir,
            argv,
        });
    }

    for i in 0..METASHARD_STORES {
        let zone = ZONES[i % ZONES.len()];
        let dir = data_dir.join(format!("metashard-{}", i + 1));
        let grpc = addr(10 + i as u16);
        let status = addr(20 + i as u16);
        out.push(Component {
            role: "metashard".into(),
            id: format!("metashard-{}", i + 1),
            zone: zone.into(),
            grpc: grpc.clone(),
            status: status.clone(),
            http: None,
            s3: None,
            pid: 0,
            data_dir: dir.clone(),
            argv: vec![
                exe.into(),
                "metashard".into(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--listen".into(),
                grpc,
                "--status-addr".into(),
                status,
                "--pd".into(),
                pd_grpc.clone(),
                "--zone".into(),
                zone.into(),
                "--host".into(),
                format!("metashard-{}", i + 1),
                "--region-split-keys".into(),
                t.region_split_keys.to_string(),
                "--region-split-size-mb".into(),
                t.region_split_size_mb.to_string(),
                "--region-split-min-keys".into(),
                t.region_split_min_keys.to_string(),
                "--region-split-interval-secs".into(),
                t.region_split_interval_secs.to_string(),
                "--region-split-load-qps".into(),
                t.region_split_load_qps.to_string(),
                "--log-gc-threshold".into(),
                t.log_gc_threshold.to_string(),
                "--region-heartbeat-secs".into(),
                t.region_heartbeat_secs.to_string(),
            ],
        });
    }

    for j in 0..DATA_NODES {
        // Two per zone: z1, z1, z2, z2, z3, z3.
        let zone = ZONES[j / (DATA_NODES / ZONES.len())];
        let dir = data_dir.join(format!("datanode-{}", j + 1));
        let grpc = addr(30 + j as u16);
        let status = addr(40 + j as u16);
        out.push(Component {
            role: "datanode".into(),
            id: format!("datanode-{}", j + 1),
            zone: zone.into(),
            grpc: grpc.clone(),
            status: status.clone(),
            http: None,
            s3: None,
            pid: 0,
            data_dir: dir.clone(),
            argv: vec![
                exe.into(),
                "datanode".into(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--listen".into(),
                grpc,
                "--status-addr".into(),
                status,
                "--pd".into(),
                pd_grpc.clone(),
                "--zone".into(),
                zone.into(),
                "--host".into(),
                format!("datanode-{}", j + 1),
                "--repair-interval-secs".into(),
                t.repair_interval_secs.to_string(),
                "--heal-after-secs".into(),
                t.heal_after_secs.to_string(),
                "--orphan-after-secs".into(),
                t.orphan_after_secs.to_string(),
                "--scrub-interval-secs".into(),
                t.scrub_interval_secs.to_string(),
                "--direct-io".into(),
                t.direct_io.to_string(),
            ],
        });
    }

    for i in 1..=t.gateways.clamp(1, MAX_GATEWAYS) as u16 {
        let (s3, status) = if i == 1 {
            (format!("{host}:{port}"), addr(50))
        } else {
            (addr(47 + 2 * i), addr(48 + 2 * i))
        };
        out.push(Component {
            role: "gateway".into(),
            id: format!("gateway-{i}"),
            zone: String::new(),
            grpc: String::new(),
            status: status.clone(),
            http: None,
            s3: Some(format!("{}://{s3}", if t.tls { "https" } else { "http" })),
            pid: 0,
            data_dir: data_dir.join(format!("gateway-{i}")),
            argv: vec![
                exe.into(),
                "gateway".into(),
                "--listen".into(),
                s3,
                "--status-addr".into(),
                status,
                "--pd".into(),
                pd_grpc.clone(),
                "--credentials-file".into(),
                data_dir.join("credentials.json").display().to_string(),
                "--cluster-key-file".into(),
                data_dir.join(CLUSTER_KEY_FILE).display().to_string(),
                "--master-key-file".into(),
                data_dir.join(MASTER_KEY_FILE).display().to_string(),
                "--max-commit-age-secs".into(),
                (t.orphan_after_secs / 2).max(1).to_string(),
                "--gc-sweep-interval-secs".into(),
                t.repair_interval_secs.max(1).to_string(),
                "--lifecycle-day-secs".into(),
                t.lifecycle_day_secs.to_string(),
                "--lifecycle-interval-secs".into(),
                t.lifecycle_interval_secs.to_string(),
                "--lifecycle-ops-per-sec".into(),
                t.lifecycle_ops_per_sec.to_string(),
            ],
        });
    }
    secure(&mut out, data_dir, t.tls);
    out
}

/// The credentials each process gets: PD's admin token always; with `tls`
/// every process's certificate (as client and server of internal
/// connections) and, for gateways, the same certificate for HTTPS on S3.
fn secure(components: &mut [Component], data_dir: &Path, tls: bool) {
    let tls_dir = data_dir.join("tls");
    for c in components {
        if c.role == "pd" {
            c.argv.extend([
                "--admin-token-file".into(),
                data_dir.join(PD_ADMIN_TOKEN_FILE).display().to_string(),
            ]);
        }
        if !tls {
            continue;
        }
        let cert = tls_dir.join(format!("{}.pem", c.id)).display().to_string();
        let key = tls_dir
            .join(format!("{}-key.pem", c.id))
            .display()
            .to_string();
        c.argv.extend([
            "--ca-cert".into(),
            tls_dir.join("ca.pem").display().to_string(),
            "--node-cert".into(),
            cert.clone(),
            "--node-key".into(),
            key.clone(),
            "--crl".into(),
            tls_dir.join(super::certs::CRL_FILE).display().to_string(),
        ]);
        if c.role == "gateway" {
            c.argv
                .extend(["--tls-cert".into(), cert, "--tls-key".into(), key]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUNING: Tuning = Tuning {
        repair_interval_secs: 5,
        heal_after_secs: 10,
        orphan_after_secs: 3600,
        scrub_interval_secs: 3600,
        rebalance_interval_secs: 10,
        max_moves_per_step: 8,
        region_split_keys: 200_000,
        region_split_size_mb: 96,
        region_split_min_keys: 1000,
        region_split_interval_secs: 10,
        region_split_load_qps: 3000,
        split_merge_interval_secs: 3600,
        max_store_down_secs: 30,
        pd_replicas: 1,
        log_gc_threshold: 1000,
        region_heartbeat_secs: 10,
        gateways: 1,
        lifecycle_day_secs: 86_400,
        lifecycle_interval_secs: 3600,
        lifecycle_ops_per_sec: 100,
        tls: false,
        direct_io: kura_datanode::DirectIo::Auto,
    };

    #[test]
    fn three_pd_members_get_their_own_ports_and_every_role_all_of_them() {
        let t = Tuning {
            pd_replicas: 3,
            ..TUNING
        };
        let p = plan("/bin/kura", Path::new("/tmp/x"), 9000, "127.0.0.1", &t);
        let pds: Vec<&Component> = p.iter().filter(|c| c.role == "pd").collect();
        assert_eq!(pds.len(), 3);
        let peers = "1=127.0.0.1:9001@127.0.0.1:9002,2=127.0.0.1:9004@127.0.0.1:9005,\
                     3=127.0.0.1:9007@127.0.0.1:9008";
        for (i, c) in pds.iter().enumerate() {
            assert_eq!(c.id, format!("pd-{}", i + 1));
            let flag = |f: &str| c.argv.windows(2).find(|w| w[0] == f).map(|w| w[1].clone());
            assert_eq!(flag("--peers").as_deref(), Some(peers));
            assert_eq!(flag("--member-id"), Some((i + 1).to_string()));
            assert_eq!(flag("--listen"), Some(c.grpc.clone()));
        }
        let all = "127.0.0.1:9001,127.0.0.1:9004,127.0.0.1:9007";
        for c in p.iter().filter(|c| c.role != "pd") {
            let pd = c
                .argv
                .windows(2)
                .find(|w| w[0] == "--pd")
                .map(|w| w[1].clone());
            assert_eq!(pd.as_deref(), Some(all), "{}", c.id);
        }
        let mut addrs: Vec<&String> = p
            .iter()
            .flat_map(|c| [&c.grpc, &c.status])
            .chain(p.iter().filter_map(|c| c.http.as_ref()))
            .filter(|a| !a.is_empty())
            .collect();
        let n = addrs.len();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), n, "every address is unique");
    }

    #[test]
    fn plan_has_the_documented_shape() {
        let p = plan("/bin/kura", Path::new("/tmp/x"), 9000, "127.0.0.1", &TUNING);
        let count = |r: &str| p.iter().filter(|c| c.role == r).count();
        assert_eq!(
            (
                count("pd"),
                count("metashard"),
                count("datanode"),
                count("gateway")
            ),
            (1, 3, 6, 1)
        );
        let four = plan(
            "/bin/kura",
            Path::new("/tmp/x"),
            9000,
            "127.0.0.1",
            &Tuning {
                gateways: 4,
                ..TUNING
            },
        );
        let gws: Vec<&Component> = four.iter().filter(|c| c.role == "gateway").collect();
        assert_eq!(gws.len(), 4);
        assert_eq!(gws[0].s3.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(gws[3].s3.as_deref(), Some("http://127.0.0.1:9055"));
        let mut all: Vec<String> = four
            .iter()
            .flat_map(|c| [c.grpc.clone(), c.status.clone()])
            .chain(
                gws.iter()
                    .filter_map(|c| c.s3.clone())
                    .map(|u| u.replace("http://", "")),
            )
            .filter(|a| !a.is_empty())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "every address is unique with 4 gateways");
        for z in ZONES {
            assert_eq!(
                p.iter()
                    .filter(|c| c.role == "datanode" && c.zone == z)
                    .count(),
                2
            );
            assert_eq!(
                p.iter()
                    .filter(|c| c.role == "metashard" && c.zone == z)
                    .count(),
                1
            );
        }
        let mut addrs: Vec<&String> = p
            .iter()
            .flat_map(|c| [&c.grpc, &c.status])
            .filter(|a| !a.is_empty())
            .collect();
        let n = addrs.len();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), n, "every address is unique");
    }
}
