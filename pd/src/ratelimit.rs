//! Cluster-wide request-rate limits: PD's share allocator (decision 0022).
//!
//! A limit (say 50 write ops/s for user U) holds for the whole cluster, but
//! each gateway can only count what reaches it. So every gateway reports,
//! every few hundred ms, its demand per (scope, kind) — requests or bytes per
//! second arriving there, admitted or not — and PD answers its *share*: the
//! rate that gateway's token bucket admits until its next report. The shares
//! of one limit always add up to the limit, whatever the spread of the load.
//!
//! Allocation ([`allocate`]) is max-min fair (water-filling) over the
//! gateways' demands: a gateway that asks for less than an equal split gets
//! what it asks, the rest split what is left. When the demands add up to
//! less than the limit, the unused capacity is spread evenly on top, so a
//! gateway whose load grows has room at once, before its next report. Every
//! gateway gets at least a small floor, so one whose first requests arrive
//! admits some of them while its report is on the way.
//!
//! The state ([`ShareTable`]) is soft: the last report of each gateway per
//! (scope, kind), forgotten after [`REPORT_TTL`] (a gateway that died or lost
//! PD stops counting within that time), not saved, not replicated. A new PD
//! leader starts empty and is complete again after one round of reports;
//! meanwhile gateways keep the shares they had.
//!
//! Pure logic: the caller passes the time in; the gRPC handler lives in
//! `service.rs`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A gateway's report counts this long; a gateway silent for longer drops
/// out and its shares go to the others at their next report.
pub const REPORT_TTL: Duration = Duration::from_secs(2);

/// The part of a limit kept as floors, split over the active gateways (each
/// gets at least `FLOOR_FRACTION * limit / gateways`).
pub const FLOOR_FRACTION: f64 = 0.05;

/// After a gap in which no gateway reported (a new PD leader, a PD
/// restart), answers are provisional this long: every live gateway reports
/// every 250 ms, so by then PD sees them all, and until then a gateway
/// reporting alone would be granted the whole limit.
pub const WARM_UP: Duration = Duration::from_millis(600);

/// How often expired reports of scopes nobody reports any more are dropped.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// One (scope, kind): `t/acme` + write_ops, say. `kind` is the wire enum's
/// value, kept opaque here.
pub type LimitKey = (String, i32);

/// What a gateway reports for one (scope, kind).
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    pub scope: String,
    pub kind: i32,
    /// The configured limit (per second) as the gateway read it.
    pub limit: u64,
    /// Requests (or bytes) per second arriving at the gateway.
    pub demand: f64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    limit: u64,
    demand: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct GatewayState {
    last_seen: Option<Instant>,
    /// What this gateway reported last time, so what it leaves out next
    /// time is dropped at once (no demand there any more).
    keys: HashSet<LimitKey>,
}

/// Each gateway's last report per (scope, kind); see the module doc.
#[derive(Debug, Default)]
pub struct ShareTable {
    limits: HashMap<LimitKey, HashMap<String, Entry>>,
    gateways: HashMap<String, GatewayState>,
    last_sweep: Option<Instant>,
    /// When reports started again after a gap (see [`WARM_UP`]).
    warm_since: Option<Instant>,
}

/// PD's answer to one report.
#[derive(Clone, Debug, PartialEq)]
pub struct Shares {
    /// One rate per reported demand, in the same order.
    pub rates: Vec<f64>,
    /// Gateways that reported within [`REPORT_TTL`], the caller included.
    pub gateways: u32,
    /// Within [`WARM_UP`] of a gap: the shares are not fair yet, and the
    /// gateway keeps those it has.
    pub provisional: bool,
}

impl ShareTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `gateway`'s report at `now` and answers its shares.
    pub fn report(&mut self, gateway: &str, demands: &[Demand], now: Instant) -> Shares {
        self.sweep(now);
        if self.active_gateways(now) == 0 {
            self.warm_since = Some(now);
        }
        let reported: HashSet<LimitKey> =
            demands.iter().map(|d| (d.scope.clone(), d.kind)).collect();
        let state = self.gateways.entry(gateway.to_string()).or_default();
        state.last_seen = Some(now);
        let dropped: Vec<LimitKey> = state.keys.difference(&reported).cloned().collect();
        state.keys = reported;
        for key in dropped {
            self.remove_entry(&key, gateway);
        }
        for d in demands {
            let demand = if d.demand.is_finite() {
                d.demand.max(0.0)
            } else {
                0.0
            };
            self.limits
                .entry((d.scope.clone(), d.kind))
                .or_default()
                .insert(
                    gateway.to_string(),
                    Entry {
                        limit: d.limit,
                        demand,
                        at: now,
                    },
                );
        }
        let rates = demands
            .iter()
            .map(|d| self.share_of(&(d.scope.clone(), d.kind), gateway, now))
            .collect();
        Shares {
            rates,
            gateways: self.active_gateways(now),
            provisional: self
                .warm_since
                .is_some_and(|t| now.saturating_duration_since(t) < WARM_UP),
        }
    }

    /// Gateways heard from within [`REPORT_TTL`] of `now`.
    pub fn active_gateways(&self, now: Instant) -> u32 {
        self.gateways
            .values()
            .filter(|g| g.last_seen.is_some_and(|t| fresh(t, now)))
            .count() as u32
    }

    /// (scope, kind) pairs with at least one report kept.
    pub fn tracked(&self) -> usize {
        self.limits.len()
    }

    /// `gateway`'s share of `key` given every fresh report.
    fn share_of(&self, key: &LimitKey, gateway: &str, now: Instant) -> f64 {
        let Some(entries) = self.limits.get(key) else {
            return 0.0;
        };
        let mut mine = None;
        let mut demands = Vec::with_capacity(entries.len());
        // Gateways may have read the limit at different times (each caches
        // records for a while): the lowest one wins until they agree.
        let mut limit = u64::MAX;
        for (gw, e) in entries {
            if !fresh(e.at, now) {
                continue;
            }
            if gw == gateway {
                mine = Some(demands.len());
            }
            demands.push(e.demand);
            limit = limit.min(e.limit);
        }
        let Some(mine) = mine else {
            return 0.0;
        };
        allocate(limit as f64, &demands)[mine]
    }

    fn remove_entry(&mut self, key: &LimitKey, gateway: &str) {
        if let Some(entries) = self.limits.get_mut(key) {
            entries.remove(gateway);
            if entries.is_empty() {
                self.limits.remove(key);
            }
        }
    }

    /// Drops reports and gateways older than [`REPORT_TTL`] (at most every
    /// [`SWEEP_INTERVAL`], so a report costs O(its own entries) mostly).
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.limits.retain(|_, entries| {
            entries.retain(|_, e| fresh(e.at, now));
            !entries.is_empty()
        });
        self.gateways
            .retain(|_, g| g.last_seen.is_some_and(|t| fresh(t, now)));
    }
}

fn fresh(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) <= REPORT_TTL
}

/// Splits `limit` over gateways with `demands` (per second each): max-min
/// fair, every share at least the floor, the shares adding up to `limit`.
///
/// - Each demand is raised to the floor (`FLOOR_FRACTION * limit / n`).
/// - If the demands fit in the limit, each gateway gets its demand plus an
///   even part of what is left (room to grow before the next report).
/// - Otherwise water-filling: the level `w` with `sum(min(d, w)) = limit`;
///   each gateway gets `min(d, w)`. Those under the level get what they ask
///   for; the busy ones split the rest evenly.
pub fn allocate(limit: f64, demands: &[f64]) -> Vec<f64> {
    let n = demands.len();
    if n == 0 || limit <= 0.0 {
        return vec![0.0; n];
    }
    let floor = FLOOR_FRACTION * limit / n as f64;
    let wants: Vec<f64> = demands.iter().map(|d| d.max(floor)).collect();
    let total: f64 = wants.iter().sum();
    if total <= limit {
        let extra = (limit - total) / n as f64;
        return wants.iter().map(|w| w + extra).collect();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| wants[a].total_cmp(&wants[b]));
    let mut shares = vec![0.0; n];
    let mut left = limit;
    for (i, &g) in order.iter().enumerate() {
        let level = left / (n - i) as f64;
        if wants[g] <= level {
            shares[g] = wants[g];
            left -= wants[g];
        } else {
            // This one and every bigger one get the level.
            for &h in &order[i..] {
                shares[h] = level;
            }
            break;
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn assert_shares(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(close(*g, *w), "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn busy_gateways_split_what_quiet_ones_leave() {
        // Limit 50; demands 105 / 30 / 15: the quiet one gets its 15, the two
        // busy ones 17.5 each.
        let s = allocate(50.0, &[105.0, 30.0, 15.0]);
        assert_shares(&s, &[17.5, 17.5, 15.0]);
        assert!(close(s.iter().sum(), 50.0));
    }

    #[test]
    fn all_busy_split_evenly() {
        assert_shares(&allocate(60.0, &[500.0, 100.0, 80.0]), &[20.0, 20.0, 20.0]);
    }

    #[test]
    fn spare_capacity_is_spread_on_top_of_the_demands() {
        // 10 + 20 + 6 of 60: 24 left, 8 each on top.
        assert_shares(&allocate(60.0, &[10.0, 20.0, 6.0]), &[18.0, 28.0, 14.0]);
        // An idle gateway counts as wanting the floor (5 % of 60 / 3 = 1).
        assert_shares(
            &allocate(60.0, &[10.0, 20.0, 0.0]),
            &[19.0 + 2.0 / 3.0, 29.0 + 2.0 / 3.0, 1.0 + 29.0 / 3.0],
        );
        assert_shares(&allocate(50.0, &[]), &[]);
        assert_shares(&allocate(50.0, &[0.0]), &[50.0]);
    }

    #[test]
    fn an_idle_gateway_keeps_a_floor_under_load() {
        // Floor = 5 % of 100 / 2 = 2.5; the busy gateway gets the rest.
        let s = allocate(100.0, &[1000.0, 0.0]);
        assert_shares(&s, &[97.5, 2.5]);
    }

    #[test]
    fn shares_always_add_up_to_the_limit() {
        let cases: &[&[f64]] = &[
            &[1.0, 2.0, 3.0],
            &[0.0, 0.0, 0.0, 0.0],
            &[1e9, 1e-3, 7.0],
            &[49.0, 1.0],
            &[50.0, 50.0, 50.0],
            &[f64::MAX / 4.0, 3.0],
        ];
        for d in cases {
            for limit in [1.0, 50.0, 1e6] {
                let s = allocate(limit, d);
                let sum: f64 = s.iter().sum();
                assert!((sum - limit).abs() < 1e-6 * limit, "{limit} {d:?} {s:?}");
                assert!(s.iter().all(|x| *x > 0.0), "{s:?}");
            }
        }
        assert_shares(&allocate(0.0, &[5.0, 5.0]), &[0.0, 0.0]);
    }

    fn demand(scope: &str, limit: u64, demand: f64) -> Demand {
        Demand {
            scope: scope.into(),
            kind: 2,
            limit,
            demand,
        }
    }

    #[test]
    fn reports_from_three_gateways_converge_to_the_fair_split() {
        let t0 = Instant::now();
        let mut t = ShareTable::new();
        // Alone, g1 gets the whole limit.
        let s = t.report("g1", &[demand("u/x", 50, 105.0)], t0);
        assert_shares(&s.rates, &[50.0]);
        assert_eq!(s.gateways, 1);
        assert!(s.provisional, "PD just started hearing reports");
        let ms = |n| t0 + Duration::from_millis(n);
        t.report("g2", &[demand("u/x", 50, 30.0)], ms(100));
        let s3 = t.report("g3", &[demand("u/x", 50, 15.0)], ms(200));
        assert_eq!(s3.gateways, 3);
        assert_shares(&s3.rates, &[15.0]);
        let s1 = t.report("g1", &[demand("u/x", 50, 105.0)], ms(600));
        let s2 = t.report("g2", &[demand("u/x", 50, 30.0)], ms(700));
        assert_shares(&s1.rates, &[17.5]);
        assert_shares(&s2.rates, &[17.5]);
        assert!(!s1.provisional && !s2.provisional);
    }

    #[test]
    fn answers_are_provisional_again_after_every_gateway_went_silent() {
        let t0 = Instant::now();
        let mut t = ShareTable::new();
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(t.report("g1", &[], t0).provisional);
        assert!(!t.report("g1", &[], ms(600)).provisional);
        assert!(!t.report("g1", &[], ms(2500)).provisional, "within the TTL");
        // A new leader, or nobody reported for longer than the TTL.
        assert!(t.report("g1", &[], ms(5000)).provisional);
        assert!(!t.report("g1", &[], ms(5600)).provisional);
    }

    #[test]
    fn a_silent_gateway_drops_out_after_the_ttl() {
        let t0 = Instant::now();
        let mut t = ShareTable::new();
        t.report("g1", &[demand("u/x", 40, 100.0)], t0);
        t.report("g2", &[demand("u/x", 40, 100.0)], t0);
        let later = t0 + REPORT_TTL + Duration::from_millis(1);
        let s = t.report("g1", &[demand("u/x", 40, 100.0)], later);
        assert_shares(&s.rates, &[40.0]);
        assert_eq!(s.gateways, 1);
        assert_eq!(t.tracked(), 1);
    }

    #[test]
    fn a_scope_left_out_of_a_report_is_dropped_at_once() {
        let t0 = Instant::now();
        let mut t = ShareTable::new();
        t.report("g1", &[demand("u/x", 40, 100.0)], t0);
        t.report("g2", &[demand("u/x", 40, 100.0)], t0);
        // g2 has no traffic on u/x any more.
        t.report("g2", &[], t0 + Duration::from_millis(300));
        let s = t.report(
            "g1",
            &[demand("u/x", 40, 100.0)],
            t0 + Duration::from_millis(350),
        );
        assert_shares(&s.rates, &[40.0]);
        assert_eq!(s.gateways, 2, "g2 still counts as a gateway");
    }

    #[test]
    fn the_lowest_limit_reported_wins_while_gateways_disagree() {
        let t0 = Instant::now();
        let mut t = ShareTable::new();
        t.report("g1", &[demand("u/x", 100, 500.0)], t0);
        let s = t.report("g2", &[demand("u/x", 40, 500.0)], t0);
        assert_shares(&s.rates, &[20.0]);
    }

    #[test]
    fn kinds_and_scopes_are_allocated_separately() {
        let t0 = Instant::now();
        let mut t = ShareTable::new();
        let read = Demand {
            kind: 1,
            ..demand("u/x", 10, 100.0)
        };
        t.report("g1", &[read.clone(), demand("t/a", 30, 100.0)], t0);
        let s = t.report(
            "g2",
            &[
                Demand {
                    demand: 1.0,
                    ..read
                },
                demand("u/x", 30, 100.0),
            ],
            t0,
        );
        // read_ops of u/x: 10 split 100 vs 1 → g2 keeps its 1 (above the
        // floor of 0.25). write_ops of u/x: g2 alone.
        assert_shares(&s.rates, &[1.0, 30.0]);
        assert_eq!(t.tracked(), 3);
    }

    #[test]
    fn bad_demands_count_as_none() {
        let t0 = Instant::now();
        let mut t = ShareTable::new();
        t.report("g1", &[demand("u/x", 10, f64::NAN)], t0);
        let s = t.report("g2", &[demand("u/x", 10, -5.0)], t0);
        assert_shares(&s.rates, &[5.0]);
    }
}
