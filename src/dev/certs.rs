//! `kura dev --tls`: a local cluster CA and a certificate for every process
//! and for the admin, under `DIR/tls/` (rcgen). The CA is made once and kept
//! (its key never leaves `DIR/tls/`); process certificates are issued again
//! at every start, so a new component or a changed address just works.
//!
//! Every process certificate names 127.0.0.1, ::1 and localhost, and carries
//! the component id as its common name; the admin certificate's common name
//! is `kura-admin`, which PD's HTTP API reads as "may change things".
//!
//! The CA's revocation list is `DIR/tls/crl.pem` (made empty at first start,
//! kept across restarts); every process watches it (`--crl`), and `kura
//! admin tls revoke` adds serial numbers to it ([`revoke`], decision 0046).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::credentials::write_secret_file;

/// Where the dev TLS files are.
#[derive(Debug, Clone)]
pub struct DevTls {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// The CA's certificate revocation list (PEM).
    pub crl: PathBuf,
}

/// The CRL's name in the TLS directory.
pub const CRL_FILE: &str = "crl.pem";

impl DevTls {
    /// The certificate and key of component `id`.
    pub fn node(&self, id: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{id}.pem")),
            self.dir.join(format!("{id}-key.pem")),
        )
    }
}

fn other(e: rcgen::Error) -> std::io::Error {
    std::io::Error::other(format!("certificate: {e}"))
}

/// The CA's parameters. They are the same every time, so the issuer of new
/// certificates can be rebuilt from them and the saved key alone.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Kura");
    dn.push(DnType::CommonName, "Kura dev cluster CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(p)
}

fn leaf_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Kura");
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Every process is a server to some peers and a client of others.
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(p)
}

/// Makes (or keeps) the CA under `data_dir/tls` and issues a certificate for
/// each of `ids` and for the admin.
pub fn resolve(data_dir: &Path, ids: &[String]) -> std::io::Result<DevTls> {
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir)?;
    let tls = DevTls {
        ca: dir.join("ca.pem"),
        admin_cert: dir.join("admin.pem"),
        admin_key: dir.join("admin-key.pem"),
        crl: dir.join(CRL_FILE),
        dir,
    };
    let ca_key_path = tls.dir.join("ca-key.pem");
    let ca_key = match std::fs::read_to_string(&ca_key_path) {
        Ok(pem) if tls.ca.exists() => KeyPair::from_pem(&pem).map_err(other)?,
        _ => {
            // A new CA: an old CA's revocations mean nothing to it.
            let _ = std::fs::remove_file(&tls.crl);
            let key = KeyPair::generate().map_err(other)?;
            let cert = ca_params()
                .map_err(other)?
                .self_signed(&key)
                .map_err(other)?;
            write_secret_file(&ca_key_path, &key.serialize_pem())?;
            std::fs::write(&tls.ca, cert.pem())?;
            key
        }
    };
    let issuer = Issuer::new(ca_params().map_err(other)?, ca_key);
    if !tls.crl.exists() {
        write_crl(&tls.crl, &issuer, &[], 1)?;
    }
    let issue = |cn: &str, cert_path: &Path, key_path: &Path| -> std::io::Result<()> {
        let key = KeyPair::generate().map_err(other)?;
        let cert = leaf_params(cn)
            .map_err(other)?
            .signed_by(&key, &issuer)
            .map_err(other)?;
        write_secret_file(key_path, &key.serialize_pem())?;
        std::fs::write(cert_path, cert.pem())
    };
    for id in ids {
        let (cert, key) = tls.node(id);
        issue(id, &cert, &key)?;
    }
    issue(
        kura_pd_client::tls::ADMIN_COMMON_NAME,
        &tls.admin_cert,
        &tls.admin_key,
    )?;
    Ok(tls)
}

/// One revoked certificate, as the CRL lists it.
struct Revoked {
    serial: Vec<u8>,
    at: time::OffsetDateTime,
}

/// Signs and writes (atomically: processes may read it any moment) a CRL
/// revoking `revoked`, numbered `number`.
fn write_crl(
    path: &Path,
    issuer: &Issuer<'_, KeyPair>,
    revoked: &[Revoked],
    number: u64,
) -> std::io::Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now,
        // Verifiers here do not enforce it; a far date keeps others quiet.
        next_update: rcgen::date_time_ymd(2124, 1, 1),
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|r| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&r.serial),
                revocation_time: r.at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let pem = params
        .signed_by(issuer)
        .and_then(|c| c.pem())
        .map_err(other)?;
    let tmp = path.with_extension("pem.tmp");
    std::fs::write(&tmp, pem)?;
    std::fs::rename(&tmp, path)
}

/// Hex of a serial number, as `openssl x509 -serial` prints it (no leading zero byte).
pub fn serial_hex(serial: &[u8]) -> String {
    let s = match serial {
        [0, rest @ ..] if !rest.is_empty() => rest,
        s => s,
    };
    s.iter().map(|b| format!("{b:02X}")).collect()
}

/// Parses a serial number written in hex (`:` separators allowed).
pub fn parse_serial(hex: &str) -> Result<Vec<u8>, String> {
    let h: String = hex.chars().filter(|c| *c != ':').collect();
    let h = if h.len() % 2 == 1 { format!("0{h}") } else { h };
    if h.is_empty() || h.len() > 42 {
        return Err(format!("{hex:?}: not a serial number (1-20 bytes of hex)"));
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| format!("{hex:?}: not a serial number (hex digits)"))
}

/// The serial numbers of the certificates in a PEM file.
pub fn cert_serials(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let bad = |m: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {m}", path.display()),
        )
    };
    let pem = std::fs::read(path)?;
    let mut out = Vec::new();
    for p in x509_parser::pem::Pem::iter_from_buffer(&pem) {
        let p = p.map_err(|e| bad(e.to_string()))?;
        if p.label != "CERTIFICATE" {
            continue;
        }
        let (_, c) =
            x509_parser::parse_x509_certificate(&p.contents).map_err(|e| bad(e.to_string()))?;
        out.push(c.raw_serial().to_vec());
    }
    if out.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(out)
}

/// The revoked serials and the number of the CRL at `path`.
fn read_crl(path: &Path) -> std::io::Result<(Vec<Revoked>, u64)> {
    let bad = |m: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {m}", path.display()),
        )
    };
    let pem = match std::fs::read(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let (mut revoked, mut number, mut seen) = (Vec::new(), 0u64, false);
    for p in x509_parser::pem::Pem::iter_from_buffer(&pem) {
        let p = p.map_err(|e| bad(e.to_string()))?;
        seen = true;
        let (_, crl) = x509_parser::parse_x509_crl(&p.contents).map_err(|e| bad(e.to_string()))?;
        if let Some(n) = crl.crl_number() {
            let b = n.to_bytes_be();
            let tail = &b[b.len().saturating_sub(8)..];
            number = number.max(tail.iter().fold(0u64, |a, &x| (a << 8) | x as u64));
        }
        for r in crl.iter_revoked_certificates() {
            revoked.push(Revoked {
                serial: r.raw_serial().to_vec(),
                at: r.revocation_date.to_datetime(),
            });
        }
    }
    // Rewriting a damaged CRL would silently drop its revocations.
    if !seen {
        return Err(bad(
            "no CRL in the file (remove it to start a new one)".into()
        ));
    }
    Ok((revoked, number))
}

/// Adds `serials` to the CRL of the dev CA in `tls_dir` (made by `kura dev
/// --tls`); returns every serial it now revokes. The cluster's processes pick
/// it up within seconds (they watch the file).
pub fn revoke(tls_dir: &Path, serials: &[Vec<u8>]) -> std::io::Result<Vec<String>> {
    let key_path = tls_dir.join("ca-key.pem");
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (the dev CA's key)", key_path.display()),
        )
    })?)
    .map_err(other)?;
    let issuer = Issuer::new(ca_params().map_err(other)?, ca_key);
    let crl = tls_dir.join(CRL_FILE);
    let (mut revoked, number) = read_crl(&crl)?;
    let now = time::OffsetDateTime::now_utc();
    for s in serials {
        let canon = |v: &[u8]| serial_hex(v);
        if !revoked.iter().any(|r| canon(&r.serial) == canon(s)) {
            revoked.push(Revoked {
                serial: s.clone(),
                at: now,
            });
        }
    }
    write_crl(&crl, &issuer, &revoked, number + 1)?;
    Ok(revoked.iter().map(|r| serial_hex(&r.serial)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_load_as_cluster_tls_and_the_ca_is_kept() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = resolve(d.path(), &["metashard-1".into()]).expect("first");
        let ca_before = std::fs::read(&t.ca).expect("ca");
        let (cert, key) = t.node("metashard-1");
        kura_pd_client::tls::ClusterTls::load(&kura_pd_client::tls::TlsPaths {
            ca: t.ca.clone(),
            cert,
            key,
        })
        .expect("a node certificate loads");
        let t = resolve(d.path(), &["metashard-1".into()]).expect("second");
        assert_eq!(std::fs::read(&t.ca).expect("ca"), ca_before);
        // A certificate issued after the restart still chains to the kept CA.
        let (cert, key) = t.node("metashard-1");
        kura_pd_client::tls::ClusterTls::load(&kura_pd_client::tls::TlsPaths {
            ca: t.ca.clone(),
            cert,
            key,
        })
        .expect("reissued certificate loads");
    }

    #[test]
    fn revoke_adds_serials_to_the_crl_and_keeps_earlier_ones() {
        let d = tempfile::tempdir().expect("tempdir");
        let t = resolve(d.path(), &["datanode-1".into()]).expect("resolve");
        // First start: an empty CRL the processes can load.
        let (revoked, n) = read_crl(&t.crl).expect("crl");
        assert!(revoked.is_empty());
        assert_eq!(n, 1);
        let (cert, key) = t.node("datanode-1");
        let paths = kura_pd_client::tls::TlsPaths {
            ca: t.ca.clone(),
            cert,
            key,
        };
        kura_pd_client::tls::ClusterTls::load_with_crl(&paths, Some(&t.crl)).expect("loads");

        let admin = cert_serials(&t.admin_cert).expect("admin serial");
        let all = revoke(&t.dir, &admin).expect("revoke");
        assert_eq!(all, vec![serial_hex(&admin[0])]);
        let node = cert_serials(&paths.cert).expect("node serial");
        let all = revoke(&t.dir, &[node[0].clone(), admin[0].clone()]).expect("again");
        assert_eq!(all, vec![serial_hex(&admin[0]), serial_hex(&node[0])]);
        let (revoked, n) = read_crl(&t.crl).expect("crl");
        assert_eq!(revoked.len(), 2);
        assert_eq!(n, 3, "every update has a higher CRL number");
        // A process whose own certificate is revoked still loads the CRL (it
        // applies to its peers); a CRL file that is empty does not load.
        kura_pd_client::tls::ClusterTls::load_with_crl(&paths, Some(&t.crl)).expect("loads");
        let good = std::fs::read(&t.crl).expect("crl");
        std::fs::write(&t.crl, "").expect("truncate");
        assert!(kura_pd_client::tls::ClusterTls::load_with_crl(&paths, Some(&t.crl)).is_err());
        assert!(
            revoke(&t.dir, &admin).is_err(),
            "a damaged CRL is not rewritten"
        );
        std::fs::write(&t.crl, good).expect("restore");
        // A restart keeps the CRL; serials parse back from hex.
        let t = resolve(d.path(), &["datanode-1".into()]).expect("restart");
        let (revoked, _) = read_crl(&t.crl).expect("crl");
        assert_eq!(revoked.len(), 2);
        let hex = serial_hex(&admin[0]);
        assert_eq!(serial_hex(&parse_serial(&hex).expect("hex")), hex);
        assert!(parse_serial("zz").is_err());
        assert!(parse_serial("").is_err());
    }
}
