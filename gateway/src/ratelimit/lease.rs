//! The reporting loop: every [`REPORT_INTERVAL`] (at once when a new scope
//! appears), tell PD this gateway's demand per (scope, kind) and take the
//! shares it grants. Also the gateway's heartbeat toward the allocator: an
//! empty report still tells PD this gateway is alive, and tells this
//! gateway how many others there are (the first share of a new scope is an
//! even split).
//!
//! When PD does not answer, the buckets keep their last shares — never
//! unlimited, never zero — and new scopes start at the even split; an
//! outage longer than a leader election is logged once. Reports are small
//! (scopes with traffic in the last [`super::bucket::IDLE_AFTER`]) and one
//! or two attempts each: a failed one is replaced by the next.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_pd_client::PdClient;
use kura_proto::pd::{RateDemand, RateShareRequest, RateShareResponse};

use super::{lock, Kind, RateLimiter};
use crate::metrics;

/// How often a gateway reports (PD forgets a report after 2 s).
pub const REPORT_INTERVAL: Duration = Duration::from_millis(250);
/// Reports triggered by new scopes are at least this far apart.
const MIN_GAP: Duration = Duration::from_millis(50);
/// A report not answered within this is given up (the next one follows).
const REPORT_TIMEOUT: Duration = Duration::from_secs(1);
/// Reports failing for this long are logged (once per outage).
const WARN_AFTER: Duration = Duration::from_secs(3);

impl RateLimiter {
    /// The report for PD at `now`: closes each bucket's demand interval
    /// and drops buckets idle for a while (PD then drops them too).
    pub fn report(&self, now: Instant) -> RateShareRequest {
        let mut demands = Vec::with_capacity(self.buckets.len());
        let mut idle = Vec::new();
        for entry in self.buckets.iter() {
            let (scope, kind) = entry.key();
            let mut b = lock(entry.value());
            if b.idle(now) {
                idle.push(entry.key().clone());
                continue;
            }
            demands.push(RateDemand {
                scope: scope.clone(),
                kind: kind.to_proto() as i32,
                limit: b.limit(),
                demand: b.take_demand(now),
            });
        }
        for key in idle {
            // Only if still idle: a request may have used it meanwhile.
            self.buckets.remove_if(&key, |_, b| lock(b).idle(now));
        }
        metrics::set_ratelimit_scopes(self.buckets.len());
        RateShareRequest {
            gateway_id: self.id.clone(),
            demands,
        }
    }

    /// Takes PD's answer: each granted share into its bucket.
    pub fn apply(&self, resp: &RateShareResponse, now: Instant) {
        if resp.provisional {
            // PD is still hearing from every gateway: keep what we have.
            return;
        }
        self.gateways.store(resp.gateways.max(1), Ordering::Relaxed);
        for g in &resp.grants {
            let Some(kind) = Kind::from_proto(g.kind) else {
                continue;
            };
            // Clone the Arc out: no map guard is held while locking the bucket.
            let bucket = self
                .buckets
                .get(&(g.scope.clone(), kind))
                .map(|b| b.value().clone());
            if let Some(b) = bucket {
                lock(&b).grant(g.rate, now);
            }
        }
    }
}

/// Reports to PD until `shutdown`. `pd` should make one or two attempts
/// per call (a follower's answer names the leader; a second attempt goes
/// there).
pub async fn run(
    limiter: Arc<RateLimiter>,
    pd: PdClient,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // Since when reports fail, and whether that was logged: a PD that is
    // electing a leader (startup, failover) is not worth a warning.
    let mut failing_since: Option<Instant> = None;
    let mut warned = false;
    loop {
        let started = Instant::now();
        let req = limiter.report(started);
        let answer = tokio::time::timeout(REPORT_TIMEOUT, pd.rate_share(req)).await;
        match answer {
            Ok(Ok(resp)) => {
                limiter.apply(&resp, Instant::now());
                metrics::ratelimit_report(true);
                if let Some(since) = failing_since.take() {
                    if std::mem::take(&mut warned) {
                        tracing::info!(
                            after_secs = since.elapsed().as_secs(),
                            "PD answers rate-limit reports again"
                        );
                    }
                }
            }
            failed => {
                metrics::ratelimit_report(false);
                let since = *failing_since.get_or_insert(started);
                if !warned && since.elapsed() >= WARN_AFTER {
                    warned = true;
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    tracing::warn!(
                        error = %why,
                        "PD does not answer rate-limit reports; keeping the last shares"
                    );
                }
            }
        }
        let next = tokio::time::Instant::from_std(started + REPORT_INTERVAL);
        let woken = tokio::select! {
            _ = tokio::time::sleep_until(next) => false,
            _ = limiter.new_scope.notified() => true,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        if woken {
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + MIN_GAP)).await;
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{Charge, Cost};
    use kura_proto::pd::RateGrant;

    fn write(scope: &str, limit: u64) -> Charge {
        Charge {
            scope: scope.into(),
            kind: Kind::WriteOps,
            limit,
            cost: Cost::Now(1.0),
        }
    }

    fn grant(scope: &str, rate: f64) -> RateGrant {
        RateGrant {
            scope: scope.into(),
            kind: Kind::WriteOps.to_proto() as i32,
            rate,
        }
    }

    /// Admitted out of one request every 1 ms over `secs` from `t0`.
    fn admitted(l: &RateLimiter, req: &[Charge], t0: Instant, secs: u64) -> usize {
        (0..secs * 1000)
            .filter(|i| l.admit(req, t0 + Duration::from_millis(*i)).is_ok())
            .count()
    }

    #[test]
    fn a_new_scope_starts_at_an_even_split_then_takes_pds_share() {
        let l = RateLimiter::new("g1".into());
        let t0 = Instant::now();
        l.apply(
            &RateShareResponse {
                gateways: 3,
                ..Default::default()
            },
            t0,
        );
        let req = [write("u/x", 60)];
        // 20/s before any grant (+ a full bucket: 2·sqrt(20) = 8.9 tokens).
        let n = admitted(&l, &req, t0, 1);
        assert!((28..=30).contains(&n), "{n}");
        let report = l.report(t0 + Duration::from_secs(1));
        assert_eq!(report.gateway_id, "g1");
        assert_eq!(report.demands[0].scope, "u/x");
        l.apply(
            &RateShareResponse {
                grants: vec![grant("u/x", 45.0)],
                gateways: 3,
                ..Default::default()
            },
            t0 + Duration::from_secs(1),
        );
        let n = admitted(&l, &req, t0 + Duration::from_secs(1), 2);
        assert!((89..=92).contains(&n), "{n}");
    }

    #[test]
    fn provisional_answers_change_nothing() {
        let l = RateLimiter::new("g1".into());
        let t0 = Instant::now();
        assert!(l.admit(&[write("u/x", 60)], t0).is_ok());
        l.apply(
            &RateShareResponse {
                grants: vec![grant("u/x", 60.0)],
                gateways: 1,
                provisional: true,
                ..Default::default()
            },
            t0,
        );
        assert_eq!(l.known_gateways(), 1);
        let b = l.buckets.get(&("u/x".to_string(), Kind::WriteOps)).unwrap();
        assert!(!lock(b.value()).granted());
    }

    #[test]
    fn idle_scopes_are_no_longer_reported() {
        let l = RateLimiter::new("g1".into());
        let t0 = Instant::now();
        assert!(l.admit(&[write("u/x", 60)], t0).is_ok());
        assert!(l
            .admit(&[write("u/y", 60)], t0 + Duration::from_secs(4))
            .is_ok());
        let r = l.report(t0 + Duration::from_secs(6));
        assert_eq!(r.demands.len(), 1);
        assert_eq!(r.demands[0].scope, "u/y");
        assert_eq!(l.tracked(), 1);
    }
}
