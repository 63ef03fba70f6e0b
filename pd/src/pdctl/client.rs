//! pdctl's HTTP calls to PD's admin API: GET/DELETE and POST with a JSON
//! body, errors phrased for people (and for trying the next PD member).

use std::time::Duration;

use serde_json::Value;

use crate::http::API_PREFIX;

/// Whether a failure says this member cannot answer now (down, or a
/// follower that knows no leader), so the next URL is worth a try.
pub(super) fn another_member_may_answer(msg: &str) -> bool {
    msg.starts_with("cannot reach PD") || msg.starts_with("PD answered 503")
}

pub(super) fn base_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// How pdctl proves itself to PD (docs/security.md): a bearer token, a
/// client certificate, or both; and the CA it trusts for `https://` URLs.
#[derive(Default)]
pub struct Credentials {
    pub token: Option<String>,
    /// rustls config with the CA (and client certificate) for HTTPS.
    pub tls: Option<rustls::ClientConfig>,
}

/// An HTTP client of PD's admin API carrying [`Credentials`].
pub struct PdHttp {
    client: reqwest::Client,
    token: Option<String>,
}

/// Redirects a follower answers with, followed by hand: reqwest drops the
/// Authorization header on a redirect to another port, and every PD member
/// of one host differs only by port.
const MAX_REDIRECTS: usize = 3;

impl PdHttp {
    pub fn new(creds: Credentials) -> Result<PdHttp, String> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(tls) = creds.tls {
            b = b.use_preconfigured_tls(tls);
        }
        let client = b
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(PdHttp {
            client,
            token: creds.token,
        })
    }

    /// Sends `method` to `path` (with `body` as JSON), following redirects.
    pub async fn call(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Value, String), String> {
        let mut url = format!("{base}{API_PREFIX}/{path}");
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.client.request(method.clone(), &url);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| format!("cannot reach PD at {base}: {}", with_causes(&e)))?;
            let status = resp.status();
            if status.is_redirection() {
                let next = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("PD answered {status} without a Location"))?;
                url = reqwest::Url::parse(&url)
                    .and_then(|u| u.join(next))
                    .map_err(|e| format!("PD redirected to an invalid URL {next:?}: {e}"))?
                    .to_string();
                continue;
            }
            let text = resp
                .text()
                .await
                .map_err(|e| format!("reading the answer from {url}: {e}"))?;
            let json: Result<Value, _> = serde_json::from_str(&text);
            if !status.is_success() {
                let msg = json
                    .ok()
                    .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| text.trim().to_string());
                return Err(format!("PD answered {status}: {msg}"));
            }
            let v = json.map_err(|e| format!("PD sent invalid JSON from {url}: {e}"))?;
            return Ok((v, text));
        }
        Err(format!("PD redirected more than {MAX_REDIRECTS} times"))
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
