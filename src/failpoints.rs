//! Failpoints in a running process (only with the `failpoints` cargo
//! feature): `PUT /fail/<name>` (body: an action), `DELETE /fail/<name>` and
//! `GET /fail` on the status address, and `KURA_FAILPOINTS` at startup.
//!
//! Actions are the `fail` crate's (`panic`, `sleep(1000)`, `pause`, `off`,
//! `return`, with `p%` and `cnt*` prefixes) plus `abort`: the whole process
//! dies at once, as kill -9 at that line would kill it. The crate's own
//! `panic` only unwinds the thread that hits it, which a Tokio worker or the
//! Raft poller may survive or swallow; a crash test needs the process gone.
//! `abort` sends SIGKILL to the process itself rather than calling
//! `std::process::abort()`: the same effect (no destructor, no flush, no
//! fsync) without a core file per crash. See docs/testing.md.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// The env var read at startup: `name=action;name=action`.
pub const ENV: &str = "KURA_FAILPOINTS";

/// Arms failpoint `name` with `action` (`abort` or a `fail` crate action).
pub fn arm(name: &str, action: &str) -> Result<(), String> {
    let (name, action) = (name.trim(), action.trim());
    if name.is_empty() {
        return Err("empty failpoint name".into());
    }
    if action == "abort" {
        let who = name.to_string();
        return fail::cfg_callback(name, move || {
            // eprintln, not tracing: the log writer may not flush before abort.
            eprintln!("failpoint {who}: abort");
            // SAFETY: signalling this very process.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            std::process::abort();
        });
    }
    fail::cfg(name, action)
}

/// Arms every failpoint in `KURA_FAILPOINTS` (so a test can crash a process
/// at a step it reaches before its status server is up, e.g. a snapshot
/// applied right after restart).
pub fn arm_from_env() -> Result<(), String> {
    let Ok(spec) = std::env::var(ENV) else {
        return Ok(());
    };
    parse_spec(&spec)?
        .into_iter()
        .try_for_each(|(name, action)| arm(&name, &action))
}

/// `a=panic; b=abort` → [(a, panic), (b, abort)].
fn parse_spec(spec: &str) -> Result<Vec<(String, String)>, String> {
    spec.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.split_once('=')
                .map(|(n, a)| (n.trim().to_string(), a.trim().to_string()))
                .ok_or_else(|| format!("{ENV}: `{item}` is not name=action"))
        })
        .collect()
}

async fn list() -> impl IntoResponse {
    let mut fps = fail::list();
    fps.sort();
    let body: String = fps
        .into_iter()
        .map(|(name, action)| format!("{name}={action}\n"))
        .collect();
    (StatusCode::OK, body)
}

async fn put(Path(name): Path<String>, body: String) -> impl IntoResponse {
    match arm(&name, &body) {
        Ok(()) => {
            tracing::warn!(failpoint = %name, action = %body.trim(), "failpoint armed");
            (StatusCode::OK, String::new())
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

async fn delete(Path(name): Path<String>) -> impl IntoResponse {
    fail::remove(&name);
    tracing::warn!(failpoint = %name, "failpoint removed");
    StatusCode::NO_CONTENT
}

/// The `/fail` routes, merged into the status server.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/fail", get(list))
        .route("/fail/{name}", axum::routing::put(put).delete(delete))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_and_rejects() {
        assert_eq!(
            parse_spec(" a::b=abort ; c=sleep(10);").unwrap(),
            vec![
                ("a::b".to_string(), "abort".to_string()),
                ("c".to_string(), "sleep(10)".to_string())
            ]
        );
        assert!(parse_spec("nope").is_err());
        assert!(parse_spec("").unwrap().is_empty());
    }

    #[test]
    fn arm_lists_and_removes() {
        arm("kura::test_fp", "1*sleep(1)").unwrap();
        assert!(fail::list().iter().any(|(n, _)| n == "kura::test_fp"));
        assert!(arm("kura::test_fp", "explode").is_err());
        fail::remove("kura::test_fp");
        assert!(!fail::list().iter().any(|(n, _)| n == "kura::test_fp"));
    }
}
