//! Supervised background loops: a loop that panics is logged, counted in
//! `kura_background_task_panics_total{task}` and started again after a short
//! backoff, instead of silently leaving the process without its GC sweeper,
//! repair or heartbeat (tokio drops a panicked task and nobody notices).
//!
//! Every role spawns its long-running loops through [`spawn`] (or awaits
//! [`supervise`] where it keeps the handle itself). It lives here because
//! `kura-pd-client` is the lowest crate every role with background loops
//! depends on (docs/decisions/0025-hung-peers-and-supervised-loops.md).
//!
//! A loop that *returns* is done (shutdown): it is not restarted. Only a panic
//! restarts it, from a fresh future made by the factory, so whatever the loop
//! kept in its future is rebuilt; state it shares through `Arc`s survives.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::LazyLock;
use std::time::Duration;

use futures::FutureExt;
use prometheus::{IntCounterVec, Opts};
use tokio::task::JoinHandle;

/// First wait before a restart; doubled per panic in a row, up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between restarts of a loop that keeps panicking.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A run this long without a panic resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

static PANICS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "kura_background_task_panics_total",
            "Panics of supervised background loops, by loop; each one was restarted",
        ),
        &["task"],
    )
    .expect("valid metric");
    // Registered once per process (every role serves the default registry).
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
});

/// Panics of `task` so far in this process.
pub fn panics(task: &str) -> u64 {
    PANICS.with_label_values(&[task]).get()
}

/// Runs `factory()` until it returns, restarting it after each panic.
/// Returns what the first run that does not panic returns.
pub async fn supervise<F, Fut, T>(task: &'static str, mut factory: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    // Touch the metric so it shows 0 before the first panic.
    let counter = PANICS.with_label_values(&[task]);
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = tokio::time::Instant::now();
        // The future is dropped after a panic and never polled again, so no
        // broken state of it is observed: AssertUnwindSafe is sound here.
        match AssertUnwindSafe(factory()).catch_unwind().await {
            Ok(out) => return out,
            Err(payload) => {
                counter.inc();
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = BACKOFF_MIN;
                }
                tracing::error!(
                    task,
                    panic = %panic_message(payload.as_ref()),
                    restart_in_ms = backoff.as_millis() as u64,
                    "background loop panicked; restarting it"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// `tokio::spawn` of a supervised loop (see [`supervise`]).
pub fn spawn<F, Fut, T>(task: &'static str, factory: F) -> JoinHandle<T>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(supervise(task, factory))
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_loop_is_restarted_and_counted() {
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let before = panics("test_panicky");
        let out = supervise("test_panicky", move || {
            let r = r.clone();
            async move {
                let n = r.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                if n < 3 {
                    panic!("run {n} fails");
                }
                n
            }
        })
        .await;
        assert_eq!(out, 3, "the fourth run returned");
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(panics("test_panicky") - before, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_between_restarts() {
        let t0 = tokio::time::Instant::now();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        supervise("test_backoff", move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 3 {
                    panic!("again");
                }
            }
        })
        .await;
        // 100 + 200 + 400 ms of backoff (paused clock: exact).
        assert_eq!(t0.elapsed(), Duration::from_millis(700));
    }

    #[tokio::test]
    async fn a_loop_that_returns_is_not_restarted() {
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        let h = spawn("test_returns", move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
            }
        });
        h.await.expect("task ends");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(panics("test_returns"), 0);
    }
}
