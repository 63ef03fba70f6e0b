//! `kura admin`'s HTTP client: one SigV4-signed request per command, the
//! payload hash over the exact body bytes, errors phrased for people and
//! never carrying a secret.

use std::time::Duration;

use serde_json::Value;

use crate::bench::sigv4::{canonical_query, payload_hash, uri_encode, Signer};

/// Where every admin route lives on a gateway's S3 port.
pub(super) const API_PREFIX: &str = "/_kura/admin/v1";

/// Why a command did not get a 2xx answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum AdminError {
    /// Flags, cluster.json, credentials or input files that cannot be used.
    #[error("{0}")]
    Setup(String),
    /// Flags that do not go together in ways clap cannot check (exit 2,
    /// like clap's own usage errors).
    #[error("{0}")]
    Usage(String),
    /// The API's own error answer (`{"error": {"code", "message"}}`).
    #[error("{code}: {message}")]
    Api { code: String, message: String },
    /// An error status without the API's error object (an old gateway, a proxy).
    #[error("{endpoint} answered {status}: {body}{hint}")]
    Status {
        endpoint: String,
        status: reqwest::StatusCode,
        body: String,
        hint: &'static str,
    },
    #[error("cannot reach the admin API at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("{endpoint} answered {status} with invalid JSON: {detail}")]
    InvalidJson {
        endpoint: String,
        status: reqwest::StatusCode,
        detail: String,
    },
}

/// One admin API request: path segments below [`API_PREFIX`] (not yet
/// encoded), decoded query parameters and the JSON body, if any.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Call {
    pub method: reqwest::Method,
    pub segments: Vec<String>,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
}

impl Call {
    pub fn new(method: reqwest::Method, segments: &[&str]) -> Call {
        Call {
            method,
            segments: segments.iter().map(|s| s.to_string()).collect(),
            query: Vec::new(),
            body: None,
        }
    }

    /// The path as sent: each segment percent-encoded except unreserved
    /// characters and ':' (so `tenant:bucket` reads as typed).
    pub fn wire_path(&self) -> String {
        self.path_with(|s| {
            s.split(':')
                .map(|part| uri_encode(part, true))
                .collect::<Vec<_>>()
                .join(":")
        })
    }

    /// The canonical URI SigV4 signs: the decoded path URI-encoded as S3
    /// does it (':' becomes %3A, '/' stays), what s3s computes on the
    /// gateway from the path it received, however that was encoded.
    pub fn canonical_path(&self) -> String {
        self.path_with(|s| uri_encode(s, false))
    }

    fn path_with(&self, encode: impl Fn(&str) -> String) -> String {
        let mut p = API_PREFIX.to_string();
        for s in &self.segments {
            p.push('/');
            p.push_str(&encode(s));
        }
        p
    }

    /// The query string, sorted and encoded (the same text is signed).
    pub fn query_string(&self) -> String {
        let params: Vec<(&str, &str)> = self.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        canonical_query(&params)
    }
}

/// A gateway's S3 endpoint reduced to what requests need.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Endpoint {
    /// `http://host[:port]`, no trailing slash.
    pub base: String,
    /// The Host header (and the signed `host`): `host[:port]`, the port
    /// left out when it is the scheme's default, as HTTP clients send it.
    pub host: String,
}

impl Endpoint {
    /// `http://host:port` (scheme optional). Only the root path: the admin
    /// API is at a fixed path on the S3 port.
    pub fn parse(s: &str) -> Result<Endpoint, AdminError> {
        let s = s.trim();
        let with_scheme = if s.contains("://") {
            s.to_string()
        } else {
            format!("http://{s}")
        };
        let bad = |why: &str| AdminError::Setup(format!("endpoint {s:?}: {why}"));
        let url = reqwest::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            // Not echoed back: it may hold a password.
            return Err(AdminError::Setup(
                "the endpoint must not carry credentials; give them in the environment \
                 (KURA_ADMIN_ACCESS_KEY / KURA_ADMIN_SECRET_KEY)"
                    .into(),
            ));
        }
        let scheme = match url.scheme() {
            s @ ("http" | "https") => s.to_string(),
            other => return Err(bad(&format!("unsupported scheme {other:?}"))),
        };
        let Some(host) = url.host_str() else {
            return Err(bad("no host"));
        };
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "give only scheme://host:port (the admin API is at /_kura/admin/v1 on the S3 port)",
            ));
        }
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Endpoint {
            base: format!("{scheme}://{host}"),
            host,
        })
    }
}

pub(super) struct Client {
    http: reqwest::Client,
    endpoint: Endpoint,
    signer: Signer,
}

/// A 2xx answer: its text as sent (for output in the server's field order)
/// and parsed (for tables).
#[derive(Debug)]
pub(super) struct Answer {
    pub text: String,
    pub json: Value,
}

impl Client {
    /// `ca`: the CA certificate (PEM) to trust for an https:// endpoint.
    pub fn new(
        endpoint: Endpoint,
        signer: Signer,
        ca: Option<&std::path::Path>,
    ) -> Result<Client, AdminError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        if let Some(ca) = ca {
            let tls = kura_pd_client::tls::rustls_client_from_pem(ca, None)
                .map_err(|e| AdminError::Setup(e.to_string()))?;
            b = b.use_preconfigured_tls(tls);
        }
        let http = b
            .build()
            .map_err(|e| AdminError::Setup(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            http,
            endpoint,
            signer,
        })
    }

    pub async fn send(&self, call: &Call) -> Result<Answer, AdminError> {
        let body = call.body.as_deref().unwrap_or_default();
        let hash = payload_hash(body);
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if call.body.is_some() {
            extra.push(("content-type", "application/json"));
        }
        let query = call.query_string();
        let headers = self.signer.headers_with_payload(
            call.method.as_str(),
            &self.endpoint.host,
            &call.canonical_path(),
            &query,
            &extra,
            &hash,
        );
        let mut url = format!("{}{}", self.endpoint.base, call.wire_path());
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        // The Host header is set to exactly what was signed rather than left
        // to the HTTP stack.
        let mut req = self
            .http
            .request(call.method.clone(), &url)
            .header("host", &self.endpoint.host);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(b) = &call.body {
            req = req.body(b.clone());
        }
        let endpoint = &self.endpoint.base;
        let resp = req.send().await.map_err(|e| AdminError::Unreachable {
            endpoint: endpoint.clone(),
            detail: with_causes(&e),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| AdminError::Unreachable {
            endpoint: endpoint.clone(),
            detail: format!("reading the answer: {}", with_causes(&e)),
        })?;
        answer(endpoint, status, text)
    }
}

/// Turns a status and body into the answer or the error to report.
pub(super) fn answer(
    endpoint: &str,
    status: reqwest::StatusCode,
    text: String,
) -> Result<Answer, AdminError> {
    let parsed: Result<Value, _> = serde_json::from_str(&text);
    if status.is_success() {
        return match parsed {
            Ok(json) => Ok(Answer { text, json }),
            Err(e) => Err(AdminError::InvalidJson {
                endpoint: endpoint.to_string(),
                status,
                detail: e.to_string(),
            }),
        };
    }
    let error = parsed.ok().and_then(|v| {
        let e = v.get("error")?;
        Some((
            e.get("code")?.as_str()?.to_string(),
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ))
    });
    match error {
        Some((code, message)) => Err(AdminError::Api { code, message }),
        None => {
            // s3s answers S3 XML errors before the admin route runs (a bad
            // signature, an unknown key), and so does a gateway without it.
            let s3_code = xml_element(&text, "Code");
            let body = match (&s3_code, xml_element(&text, "Message")) {
                (Some(code), Some(msg)) if !msg.is_empty() => format!("{code}: {msg}"),
                (Some(code), _) => code.clone(),
                (None, _) => snippet(&text),
            };
            let hint = match (status.as_u16(), s3_code.as_deref()) {
                (404 | 405 | 501, _) => " (does this gateway serve the admin API?)",
                (_, Some("SignatureDoesNotMatch" | "InvalidAccessKeyId")) => {
                    " (check the admin credentials and --region)"
                }
                _ => "",
            };
            Err(AdminError::Status {
                endpoint: endpoint.to_string(),
                status,
                body,
                hint,
            })
        }
    }
}

/// The text of the first `<name>…</name>` in an XML error body.
fn xml_element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&format!("</{name}>"))?;
    Some(snippet(&text[start..start + len]))
}

/// The start of a body on one line, for an error message.
fn snippet(text: &str) -> String {
    const MAX: usize = 200;
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > MAX {
        format!("{}…", one_line.chars().take(MAX).collect::<String>())
    } else if one_line.is_empty() {
        "(empty body)".into()
    } else {
        one_line
    }
}

/// `e` and its sources, so "error sending request" says why.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_colons_on_the_wire_and_sign_them_encoded() {
        let c = Call::new(reqwest::Method::GET, &["buckets", "acme:photos"]);
        assert_eq!(c.wire_path(), "/_kura/admin/v1/buckets/acme:photos");
        assert_eq!(c.canonical_path(), "/_kura/admin/v1/buckets/acme%3Aphotos");
        let c = Call::new(reqwest::Method::GET, &["buckets", ":a b/c:"]);
        assert_eq!(c.wire_path(), "/_kura/admin/v1/buckets/:a%20b%2Fc:");
        // s3s signs the decoded path, where an encoded '/' is a '/' again.
        assert_eq!(c.canonical_path(), "/_kura/admin/v1/buckets/%3Aa%20b/c%3A");
        let c = Call::new(reqwest::Method::GET, &["users", "x~y.z_-"]);
        assert_eq!(c.wire_path(), c.canonical_path());
    }

    #[test]
    fn endpoints_reduce_to_scheme_host_and_port() {
        let e = Endpoint::parse("http://127.0.0.1:9000/").expect("valid");
        assert_eq!(e.base, "http://127.0.0.1:9000");
        assert_eq!(e.host, "127.0.0.1:9000");
        let e = Endpoint::parse("localhost:9000").expect("valid");
        assert_eq!(e.base, "http://localhost:9000");
        // The default port is not in the Host header HTTP clients send.
        assert_eq!(Endpoint::parse("http://gw:80").expect("valid").host, "gw");
        assert_eq!(
            Endpoint::parse("http://[::1]:9000").expect("valid").host,
            "[::1]:9000"
        );
        assert_eq!(
            Endpoint::parse("https://gw:9443").expect("valid").base,
            "https://gw:9443"
        );
        for bad in ["http://gw:9000/prefix", "ftp://gw"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        let e = Endpoint::parse("http://ak:secret@gw:9000").expect_err("credentials");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn error_answers_become_code_and_message() {
        let e = answer(
            "http://gw",
            reqwest::StatusCode::NOT_FOUND,
            r#"{"error": {"code": "NoSuchUser", "message": "user 'x' does not exist"}}"#.into(),
        )
        .expect_err("an error");
        assert_eq!(e.to_string(), "NoSuchUser: user 'x' does not exist");
        let e = answer(
            "http://gw",
            reqwest::StatusCode::NOT_FOUND,
            "<Error><Code>NoSuchBucket</Code></Error>".into(),
        )
        .expect_err("an error");
        assert_eq!(
            e.to_string(),
            "http://gw answered 404 Not Found: NoSuchBucket (does this gateway serve the admin API?)"
        );
        let e = answer(
            "http://gw",
            reqwest::StatusCode::FORBIDDEN,
            "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code></Error>".into(),
        )
        .expect_err("an error");
        assert_eq!(
            e.to_string(),
            "http://gw answered 403 Forbidden: SignatureDoesNotMatch \
             (check the admin credentials and --region)"
        );
        let e = answer(
            "http://gw",
            reqwest::StatusCode::FORBIDDEN,
            "<Error><Code>InvalidAccessKeyId</Code><Message>no such key</Message></Error>".into(),
        )
        .expect_err("an error");
        assert!(e
            .to_string()
            .contains("403 Forbidden: InvalidAccessKeyId: no such key (check"));
        let e =
            answer("http://gw", reqwest::StatusCode::BAD_GATEWAY, "".into()).expect_err("an error");
        assert_eq!(
            e.to_string(),
            "http://gw answered 502 Bad Gateway: (empty body)"
        );
        let ok = answer("http://gw", reqwest::StatusCode::OK, "{}".into());
        assert!(ok.is_ok());
        let e =
            answer("http://gw", reqwest::StatusCode::OK, "nope".into()).expect_err("invalid JSON");
        assert!(e
            .to_string()
            .starts_with("http://gw answered 200 OK with invalid JSON"));
    }
}
