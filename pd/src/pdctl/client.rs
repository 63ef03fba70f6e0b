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

/// The parsed answer and its body as sent (pretty JSON in field order).
pub(super) async fn fetch(
    base: &str,
    method: reqwest::Method,
    path: &str,
) -> Result<(Value, String), String> {
    let url = format!("{base}{API_PREFIX}/{path}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let resp = client
        .request(method, &url)
        .send()
        .await
        .map_err(|e| format!("cannot reach PD at {base}: {}", with_causes(&e)))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| format!("reading the answer from {url}: {e}"))?;
    let json: Result<Value, _> = serde_json::from_str(&body);
    if !status.is_success() {
        let msg = json
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        return Err(format!("PD answered {status}: {msg}"));
    }
    let v = json.map_err(|e| format!("PD sent invalid JSON from {url}: {e}"))?;
    Ok((v, body))
}

/// POSTs `body` as JSON; the answer as [`fetch`] returns it.
pub(super) async fn post<T: serde::Serialize>(
    base: &str,
    path: &str,
    body: &T,
) -> Result<(Value, String), String> {
    let url = format!("{base}{API_PREFIX}/{path}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let resp = client
        .post(&url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("cannot reach PD at {base}: {}", with_causes(&e)))?;
    let status = resp.status();
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
    Ok((v, text))
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
