//! Who may use PD's HTTP API (docs/security.md).
//!
//! Two levels: reading (every GET) and changing (every other method:
//! operators, store deletion, scheduler and config changes). A caller proves
//! one of them by
//! - a client certificate signed by the cluster CA, when PD runs with cluster
//!   TLS: the admin certificate (common name `kura-admin`) may change, any
//!   other (a node's) may read;
//! - or a bearer token: the admin token (`--admin-token-file`) may change,
//!   the read token (`--read-token-file`) may read.
//!
//! `GET /pd/api/v1/health` stays open: load balancers and probes ask it
//! without credentials, and it tells nothing but "alive".

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// What a verified client certificate says about its holder; the TLS accept
/// loop puts it in each request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertRole {
    Admin,
    Node,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    None,
    Read,
    Admin,
}

/// The credentials PD accepts. Tokens are kept as SHA-256 digests, so
/// comparing them leaks nothing useful through timing.
#[derive(Clone, Debug, Default)]
pub struct HttpAuth {
    /// No check at all: in-process tests and tools that build a `Config`
    /// themselves. `kura pd` always has a credential.
    open: bool,
    admin: Option<[u8; 32]>,
    read: Option<[u8; 32]>,
}

const OPEN_PATHS: &[&str] = &["/pd/api/v1/health"];

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

impl HttpAuth {
    /// Everything allowed to everyone (library use and in-process tests).
    pub fn open() -> HttpAuth {
        HttpAuth {
            open: true,
            ..Default::default()
        }
    }

    /// Tokens only certificates can replace: `admin` changes, `read` reads.
    pub fn tokens(admin: Option<&str>, read: Option<&str>) -> HttpAuth {
        HttpAuth {
            open: false,
            admin: admin.map(digest),
            read: read.map(digest),
        }
    }

    fn level(&self, req: &Request) -> Level {
        let by_cert = match req.extensions().get::<CertRole>() {
            Some(CertRole::Admin) => Level::Admin,
            Some(CertRole::Node) => Level::Read,
            None => Level::None,
        };
        let by_token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(digest)
            .map(|d| {
                if Some(d) == self.admin {
                    Level::Admin
                } else if Some(d) == self.read {
                    Level::Read
                } else {
                    Level::None
                }
            })
            .unwrap_or(Level::None);
        by_cert.max(by_token)
    }
}

fn needed(req: &Request) -> Level {
    if OPEN_PATHS.contains(&req.uri().path()) {
        Level::None
    } else if req.method() == Method::GET || req.method() == Method::HEAD {
        Level::Read
    } else {
        Level::Admin
    }
}

/// The middleware: 401 without a credential, 403 with one too weak.
pub async fn gate(State(auth): State<Arc<HttpAuth>>, req: Request, next: Next) -> Response {
    let need = needed(&req);
    if auth.open || need == Level::None {
        return next.run(req).await;
    }
    let have = auth.level(&req);
    if have >= need {
        return next.run(req).await;
    }
    let (status, msg) = if have == Level::None {
        (
            StatusCode::UNAUTHORIZED,
            "PD's HTTP API needs a credential: the admin token (Authorization: Bearer …, \
             pdctl --token or --cluster) or a client certificate signed by the cluster CA",
        )
    } else {
        (
            StatusCode::FORBIDDEN,
            "this credential may only read; changes need the admin token or admin certificate",
        )
    };
    let mut resp = crate::http::error(status, msg.into());
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    resp.into_response()
}

/// The role a verified client certificate (DER) carries: admin when its
/// subject common name is `kura-admin`.
pub fn cert_role(der: &[u8]) -> CertRole {
    let admin = x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .any(|cn| cn.as_str() == Ok(kura_pd_client::tls::ADMIN_COMMON_NAME))
        })
        .unwrap_or(false);
    if admin {
        CertRole::Admin
    } else {
        CertRole::Node
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn req(method: Method, path: &str, token: Option<&str>, cert: Option<CertRole>) -> Request {
        let mut b = axum::http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let mut r = b.body(Body::empty()).expect("request");
        if let Some(c) = cert {
            r.extensions_mut().insert(c);
        }
        r
    }

    #[test]
    fn reads_and_changes_need_their_own_level() {
        let auth = HttpAuth::tokens(Some("adm"), Some("rd"));
        let get = |t, c| auth.level(&req(Method::GET, "/pd/api/v1/stores", t, c));
        assert_eq!(get(None, None), Level::None);
        assert_eq!(get(Some("wrong"), None), Level::None);
        assert_eq!(get(Some("rd"), None), Level::Read);
        assert_eq!(get(Some("adm"), None), Level::Admin);
        assert_eq!(get(None, Some(CertRole::Node)), Level::Read);
        assert_eq!(get(None, Some(CertRole::Admin)), Level::Admin);
        assert_eq!(
            needed(&req(Method::DELETE, "/pd/api/v1/store/4", None, None)),
            Level::Admin
        );
        assert_eq!(
            needed(&req(Method::POST, "/pd/api/v1/operators", None, None)),
            Level::Admin
        );
        assert_eq!(
            needed(&req(Method::GET, "/pd/api/v1/health", None, None)),
            Level::None
        );
        assert_eq!(
            needed(&req(Method::GET, "/pd/api/v1/regions", None, None)),
            Level::Read
        );
    }

    #[test]
    fn a_token_without_a_configured_twin_grants_nothing() {
        let auth = HttpAuth::tokens(Some("adm"), None);
        assert_eq!(
            auth.level(&req(Method::GET, "/x", Some(""), None)),
            Level::None
        );
    }

    #[test]
    fn the_admin_common_name_makes_an_admin_certificate() {
        let mut p = rcgen::CertificateParams::new(vec!["x".into()]).expect("params");
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            kura_pd_client::tls::ADMIN_COMMON_NAME,
        );
        let key = rcgen::KeyPair::generate().expect("key");
        let admin = p.self_signed(&key).expect("cert");
        assert_eq!(cert_role(admin.der()), CertRole::Admin);
        let mut p = rcgen::CertificateParams::new(vec!["x".into()]).expect("params");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "kura-node");
        let node = p.self_signed(&key).expect("cert");
        assert_eq!(cert_role(node.der()), CertRole::Node);
        assert_eq!(cert_role(b"garbage"), CertRole::Node);
    }
}
