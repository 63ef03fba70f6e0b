//! `kura dev --tls`: a local cluster CA and a certificate for every process
//! and for the admin, under `DIR/tls/` (rcgen). The CA is made once and kept
//! (its key never leaves `DIR/tls/`); process certificates are issued again
//! at every start, so a new component or a changed address just works.
//!
//! Every process certificate names 127.0.0.1, ::1 and localhost, and carries
//! the component id as its common name; the admin certificate's common name
//! is `kura-admin`, which PD's HTTP API reads as "may change things".

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
}

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
        dir,
    };
    let ca_key_path = tls.dir.join("ca-key.pem");
    let ca_key = match std::fs::read_to_string(&ca_key_path) {
        Ok(pem) if tls.ca.exists() => KeyPair::from_pem(&pem).map_err(other)?,
        _ => {
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
}
