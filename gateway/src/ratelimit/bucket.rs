//! One (scope, kind) on this gateway: a token bucket filled at this
//! gateway's share of the cluster-wide limit, and the demand it reports to
//! PD for the next share. Pure: every call is given the time.
//!
//! - **Tokens.** The bucket fills at `rate` up to a capacity of
//!   [`BURST`] worth of the rate, at least [`MIN_BURST_TOKENS`] and at least
//!   [`NOISE_SIGMAS`] `· sqrt(rate)` (room for the random clumps of
//!   independent clients): small, so what is admitted over any second stays
//!   close to the rate. A request
//!   needs `min(cost, capacity)` tokens and then takes its whole cost, so a
//!   body larger than the capacity is admitted from a full bucket and leaves
//!   it in debt (later requests wait until it is paid back).
//! - **Bytes out** are not known when a GET is admitted: a GET needs the
//!   bucket out of debt, and its response size is charged when the response
//!   head is ready ([`TokenBucket::charge`]), debt bounded by [`MAX_DEBT`].
//! - **Demand** is what arrives, admitted or not, per second over the last
//!   [`DEMAND_WINDOW`] report intervals. Refused requests count: they are
//!   how PD learns that this gateway needs a bigger share.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The bucket holds this much of its rate.
pub const BURST: Duration = Duration::from_millis(100);
/// ... but at least this many tokens: with a capacity of one, arrivals
/// only a little faster than the rate would find it full and waste refill
/// (admitting ~half the rate); two is enough for any arrival pattern.
pub const MIN_BURST_TOKENS: f64 = 2.0;
/// ... and at least this many standard deviations of the arrivals in one
/// second at the rate (Poisson: `sqrt(rate)`). Independent clients arrive
/// in random clumps: a gateway whose share just covers its demand would
/// otherwise refuse the clumps, leave the gaps' tokens unused, and the
/// cluster admit well below the limit (simulated: 70/20/10 % of random
/// clients at 3x a 50/s limit, 44.6/s admitted with 100 ms buckets, 49.6/s
/// with this rule). It matters for small rates only: 2·sqrt(r) exceeds 100 ms
/// of r below r = 400/s.
pub const NOISE_SIGMAS: f64 = 2.0;
/// Demand is averaged over this many report intervals (~1 s).
pub const DEMAND_WINDOW: usize = 4;
/// A demand over a shorter span (a bucket made just before a report) is
/// divided by this instead, so one request is not reported as a flood.
pub const MIN_DEMAND_SPAN: Duration = Duration::from_millis(250);
/// Bytes charged after the fact put the bucket in debt by at most this
/// much of its rate, so one huge GET does not lock a scope for hours.
pub const MAX_DEBT: Duration = Duration::from_secs(10);
/// A bucket without arrivals for this long is dropped (and no longer
/// reported, which tells PD this gateway has no demand there).
pub const IDLE_AFTER: Duration = Duration::from_secs(5);

/// The rate a gateway admits before PD granted it a share: an even split
/// over the gateways it knows of.
pub fn initial_rate(limit: u64, gateways: u32) -> f64 {
    limit as f64 / gateways.max(1) as f64
}

#[derive(Debug)]
pub struct TokenBucket {
    /// The cluster-wide limit as last read from the scope's record.
    limit: u64,
    /// This gateway's share, per second.
    rate: f64,
    /// Whether `rate` came from PD (else it is [`initial_rate`]).
    granted: bool,
    tokens: f64,
    refilled: Instant,
    /// Units arrived since `since` (the last report).
    arrived: f64,
    since: Instant,
    /// (units, span) of the last report intervals.
    window: VecDeque<(f64, Duration)>,
    last_arrival: Instant,
    /// Mean size of the responses charged after the fact: what a refused
    /// GET is counted as in the demand.
    mean_charge: f64,
}

impl TokenBucket {
    /// A bucket for `limit`, admitting at [`initial_rate`] until a grant.
    pub fn new(limit: u64, gateways: u32, now: Instant) -> Self {
        let rate = initial_rate(limit, gateways);
        let mut b = TokenBucket {
            limit,
            rate,
            granted: false,
            tokens: 0.0,
            refilled: now,
            arrived: 0.0,
            since: now,
            window: VecDeque::with_capacity(DEMAND_WINDOW + 1),
            last_arrival: now,
            mean_charge: 0.0,
        };
        b.tokens = b.capacity();
        b
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn granted(&self) -> bool {
        self.granted
    }

    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    fn capacity(&self) -> f64 {
        if self.rate <= 0.0 {
            // A limit of 0 allows nothing, not a burst.
            return 0.0;
        }
        (self.rate * BURST.as_secs_f64())
            .max(MIN_BURST_TOKENS)
            .max(NOISE_SIGMAS * self.rate.sqrt())
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = self.refilled.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity());
    }

    /// The scope's record now says `limit`: a granted share is scaled to
    /// it at once (PD's next answer will be based on it), an initial one
    /// recomputed.
    pub fn set_limit(&mut self, limit: u64, gateways: u32, now: Instant) {
        if limit == self.limit {
            return;
        }
        self.refill(now);
        self.rate = if self.granted && self.limit > 0 {
            self.rate * limit as f64 / self.limit as f64
        } else {
            initial_rate(limit, gateways)
        };
        self.limit = limit;
        self.tokens = self.tokens.min(self.capacity());
    }

    /// PD's share for this gateway.
    pub fn grant(&mut self, rate: f64, now: Instant) {
        if !rate.is_finite() || rate < 0.0 {
            return;
        }
        self.refill(now);
        // PD never grants more than the limit; a limit lowered here since
        // the report is honoured at once.
        self.rate = rate.min(self.limit as f64);
        self.granted = true;
        self.tokens = self.tokens.min(self.capacity());
    }

    /// Counts `units` arriving (admitted or not) toward the demand.
    pub fn arrive(&mut self, units: f64, now: Instant) {
        self.arrived += units;
        self.last_arrival = self.last_arrival.max(now);
    }

    /// What a GET whose size is not known yet counts as in the demand.
    pub fn mean_charge(&self) -> f64 {
        self.mean_charge
    }

    /// `None` when `need` tokens (at most the capacity) are there now, else
    /// how long until they will be at the current rate.
    pub fn check(&mut self, need: f64, now: Instant) -> Option<Duration> {
        self.refill(now);
        let need = need.min(self.capacity());
        if self.rate > 0.0 && self.tokens >= need {
            return None;
        }
        if self.rate <= 0.0 {
            return Some(Duration::MAX);
        }
        Some(Duration::from_secs_f64(
            ((need - self.tokens) / self.rate).clamp(0.0, 1e6),
        ))
    }

    /// Takes `cost` tokens (after a successful [`Self::check`]); may leave
    /// the bucket in debt.
    pub fn take(&mut self, cost: f64) {
        self.tokens -= cost;
    }

    /// Gives back what [`Self::take`] took, when another scope refused the
    /// request after all.
    pub fn refund(&mut self, cost: f64) {
        self.tokens = (self.tokens + cost).min(self.capacity());
    }

    /// Charges `units` after the fact (a GET's response size), debt bounded
    /// by [`MAX_DEBT`] of the rate.
    pub fn charge(&mut self, units: f64, now: Instant) {
        self.refill(now);
        let floor = -self.rate * MAX_DEBT.as_secs_f64();
        self.tokens = (self.tokens - units).max(floor.min(self.tokens));
        self.arrived += units;
        self.last_arrival = self.last_arrival.max(now);
        self.mean_charge = if self.mean_charge == 0.0 {
            units
        } else {
            0.8 * self.mean_charge + 0.2 * units
        };
    }

    /// The demand (units per second) over the last intervals, closing the
    /// current one: called once per report.
    pub fn take_demand(&mut self, now: Instant) -> f64 {
        let span = now.saturating_duration_since(self.since);
        self.window.push_back((self.arrived, span));
        while self.window.len() > DEMAND_WINDOW {
            self.window.pop_front();
        }
        self.arrived = 0.0;
        self.since = now;
        let units: f64 = self.window.iter().map(|w| w.0).sum();
        let span: Duration = self.window.iter().map(|w| w.1).sum();
        units / span.max(MIN_DEMAND_SPAN).as_secs_f64()
    }

    /// No arrivals for [`IDLE_AFTER`].
    pub fn idle(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_arrival) > IDLE_AFTER
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up, 1..=60.
pub fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait.as_secs_f64().ceil();
    if secs.is_nan() {
        return 1;
    }
    secs.clamp(1.0, 60.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// Offers one request every `every_ms` for `secs` seconds; returns how
    /// many were admitted.
    fn offer(b: &mut TokenBucket, t0: Instant, every_ms: u64, secs: u64) -> u64 {
        let mut admitted = 0;
        let mut t = 0;
        while t < secs * 1000 {
            let now = ms(t0, t);
            b.arrive(1.0, now);
            if b.check(1.0, now).is_none() {
                b.take(1.0);
                admitted += 1;
            }
            t += every_ms;
        }
        admitted
    }

    #[test]
    fn a_saturated_bucket_admits_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, 1, t0);
        // 200/s offered for 10 s against 50/s: 500 + the first burst
        // (2·sqrt(50) = 14 tokens).
        let n = offer(&mut b, t0, 5, 10);
        assert!((512..=516).contains(&n), "{n}");
    }

    #[test]
    fn arrivals_just_above_the_rate_are_not_halved() {
        // 6/s offered against 5/s: a one-token bucket would admit 3/s.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5, 1, t0);
        let n = offer(&mut b, t0, 167, 30);
        assert!((150..=155).contains(&n), "{n}");
    }

    #[test]
    fn the_first_share_is_an_even_split_then_pd_decides() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, 3, t0);
        assert_eq!(b.rate(), 20.0);
        assert!(!b.granted());
        b.grant(35.5, ms(t0, 10));
        assert_eq!(b.rate(), 35.5);
        assert!(b.granted());
        // A share above the limit (the limit was lowered here) is capped.
        b.set_limit(30, 3, ms(t0, 20));
        assert!((b.rate() - 17.75).abs() < 1e-9, "scaled with the limit");
        b.grant(50.0, ms(t0, 30));
        assert_eq!(b.rate(), 30.0);
    }

    #[test]
    fn a_zero_limit_admits_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 1, t0);
        assert_eq!(b.check(1.0, t0), Some(Duration::MAX));
        assert_eq!(b.check(1.0, ms(t0, 5000)), Some(Duration::MAX));
        assert_eq!(retry_after_secs(Duration::MAX), 60);
    }

    #[test]
    fn a_big_body_leaves_the_bucket_in_debt() {
        let t0 = Instant::now();
        // 1000 bytes/s: capacity 100 bytes.
        let mut b = TokenBucket::new(1000, 1, t0);
        assert_eq!(b.check(5000.0, t0), None, "a full bucket admits any size");
        b.take(5000.0);
        assert!(b.tokens() < -4899.0);
        let wait = b.check(10.0, t0).expect("in debt");
        assert!((wait.as_secs_f64() - 4.91).abs() < 0.01, "{wait:?}");
        assert_eq!(retry_after_secs(wait), 5);
        assert_eq!(b.check(10.0, ms(t0, 4911)), None);
    }

    #[test]
    fn bytes_out_are_charged_after_the_fact_with_bounded_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1, t0);
        assert_eq!(b.check(1.0, t0), None);
        b.charge(1_000_000.0, t0);
        // At most 10 s of the rate in debt.
        assert!((b.tokens() + 10_000.0).abs() < 1e-6, "{}", b.tokens());
        assert!(b.check(1.0, ms(t0, 9000)).is_some());
        assert_eq!(b.check(1.0, ms(t0, 10_002)), None);
        assert_eq!(b.mean_charge(), 1_000_000.0);
        b.charge(500_000.0, ms(t0, 10_002));
        assert_eq!(b.mean_charge(), 900_000.0);
    }

    #[test]
    fn refunds_do_not_overfill() {
        let t0 = Instant::now();
        // 100/s: 2·sqrt(100) = 20 tokens, more than 100 ms of it.
        let mut b = TokenBucket::new(100, 1, t0);
        assert_eq!(b.tokens(), 20.0);
        b.take(1.0);
        b.refund(1.0);
        b.refund(1.0);
        assert_eq!(b.tokens(), 20.0);
        // 10,000/s: 100 ms of it (1,000) is more than 2·sqrt (200).
        assert_eq!(TokenBucket::new(10_000, 1, t0).tokens(), 1000.0);
    }

    #[test]
    fn demand_is_averaged_over_the_last_intervals() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 1, t0);
        // One request just before the first report: not 1000/s.
        b.arrive(1.0, ms(t0, 1));
        assert_eq!(b.take_demand(ms(t0, 1)), 4.0);
        // 20 per 250 ms = 80/s, steady.
        let mut d = 0.0;
        for i in 1..=8 {
            for _ in 0..20 {
                b.arrive(1.0, ms(t0, 1 + 250 * i));
            }
            d = b.take_demand(ms(t0, 1 + 250 * i));
        }
        assert!((d - 80.0).abs() < 1e-9, "{d}");
        // The load stops: gone from the demand within the window.
        for i in 9..=12 {
            d = b.take_demand(ms(t0, 1 + 250 * i));
        }
        assert_eq!(d, 0.0);
        assert!(!b.idle(ms(t0, 3001 + 4000)));
        assert!(b.idle(ms(t0, 2001 + 5001)));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(20)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3600)), 60);
    }
}
