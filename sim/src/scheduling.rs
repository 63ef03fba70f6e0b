//! How long one scheduling round takes at many regions (issue 5's
//! "scheduling decision time at 100,000 regions"): PD's live state → the
//! `ClusterModel` snapshot → every default scheduler, on one core. The
//! cluster is skewed on purpose (every leader on store 1, store 3 down) so
//! balance-leader and replica-checker both have work to find.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kura_pd::schedule::model::ClusterModel;
use kura_pd::schedule::{default_schedulers, run_round, ScheduleContext, StoreLimiter};

use crate::heartbeats::{region, three_store_cluster};

/// Figures of one run.
#[derive(Debug, Clone)]
pub struct ScheduleReport {
    pub regions: usize,
    /// PD's region map → the scheduling snapshot.
    pub build_model: Duration,
    /// Every default scheduler over the snapshot.
    pub round: Duration,
    pub operators: usize,
}

pub fn run(regions: usize) -> ScheduleReport {
    let mut c = three_store_cluster();
    for i in 0..regions {
        let r = region(i, regions);
        let leader = r.peers[0];
        c.region_heartbeat(r, Some(leader), 2, 1 << 20, 1000)
            .expect("valid heartbeat");
    }
    // Stores 1 and 2 heartbeat at t = 100 s, store 3 went silent at t = 0.
    let now = 100_000;
    for s in 1..=2u64 {
        let mut meta = c.store(s).expect("registered").meta.clone();
        meta.last_heartbeat_unix_ms = now;
        c.restore_store(meta);
    }
    let t0 = Instant::now();
    let model = ClusterModel::from_cluster(&c, now, 30_000, 3_000);
    let build_model = t0.elapsed();
    let mut schedulers = default_schedulers();
    let mut busy = BTreeSet::new();
    let mut limits = StoreLimiter::new(120);
    let mut ctx = ScheduleContext {
        now_ms: now,
        busy_regions: &mut busy,
        limits: &mut limits,
    };
    let t1 = Instant::now();
    let ops = run_round(&mut schedulers, &BTreeSet::new(), &model, &mut ctx);
    let round = t1.elapsed();
    ScheduleReport {
        regions,
        build_model,
        round,
        operators: ops.len(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_skewed_cluster_gets_operators() {
        let r = super::run(2000);
        assert_eq!(r.regions, 2000);
        // Store 3 is down and there is no fourth store: replica-checker
        // waits; balance-leader moves leaders from store 1 to store 2.
        assert!(r.operators > 0, "{r:?}");
    }
}
