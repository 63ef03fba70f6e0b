//! PD's Prometheus metrics, registered once in the default registry (the
//! `kura` binary serves it on the status address).

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

pub struct Metrics {
    /// Stores by liveness ("Up", "Down", "Offline", "Tombstone").
    pub stores: IntGaugeVec,
    /// Data nodes by state ("Up", "Down", "Offline": decommissioning, "Tombstone": decommissioned).
    pub data_nodes: IntGaugeVec,
    pub regions: IntGauge,
    pub placement_version: IntGauge,
    /// Placement groups per storage class ("REPLICA3", "EC_4_2", "EC_8_3"); 0: not built.
    pub placement_groups: IntGaugeVec,
    /// Slots still to move per storage class (all steps to go).
    pub pending_moves: IntGaugeVec,
    /// 1 when a class cannot move slots (too few nodes or zones would remain).
    pub moves_blocked: IntGaugeVec,
    /// Slots moved since the cluster was created (persisted).
    pub slots_moved: IntGauge,
    /// Slots moved by this PD process.
    pub slot_moves: IntCounter,
    /// Map steps taken by this PD process.
    pub rebalance_steps: IntCounter,
    pub store_heartbeats: IntCounter,
    pub region_heartbeats: IntCounter,
    pub stale_region_heartbeats: IntCounter,
    pub data_node_heartbeats: IntCounter,
    /// Store and data node heartbeats refused for their identity, by `kind`
    /// and `reason` (`wrong_uuid`, `no_uuid`, `replaced`; decision 0044).
    pub heartbeats_refused: IntCounterVec,
    pub state_saves: IntCounter,
    /// 1 while this PD serves as leader (a single PD always).
    pub leader: IntGauge,
    /// Replicated PD: the Raft term this member is in.
    pub raft_term: IntGauge,
    /// Replicated PD: leader changes this member saw.
    pub leader_changes: IntCounter,
    /// Replicated PD: snapshots (whole states) received from the leader.
    pub snapshots_applied: IntCounter,
}

fn gauge_vec(name: &str, help: &str, label: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &[label]).expect("metric name and labels are valid")
}

/// Registers `c`; a second registration (several PDs in one test process) is ignored.
fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    let _ = prometheus::default_registry().register(Box::new(c.clone()));
    c
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        stores: register(gauge_vec(
            "kura_pd_stores",
            "Metashard stores known to PD, by state.",
            "state",
        )),
        data_nodes: register(gauge_vec(
            "kura_pd_data_nodes",
            "Data nodes known to PD, by state.",
            "state",
        )),
        regions: register(
            IntGauge::new("kura_pd_regions", "Regions in PD's region map.").expect("valid metric"),
        ),
        placement_version: register(
            IntGauge::new(
                "kura_pd_placement_version",
                "Version of the placement-group maps, one for all classes (0: none yet).",
            )
            .expect("valid metric"),
        ),
        placement_groups: register(gauge_vec(
            "kura_pd_placement_groups",
            "Placement groups per storage class (0: the class is not built yet).",
            "storage_class",
        )),
        pending_moves: register(gauge_vec(
            "kura_pd_placement_pending_moves",
            "PG slots still to move to reach the balanced map, per storage class.",
            "storage_class",
        )),
        moves_blocked: register(gauge_vec(
            "kura_pd_placement_moves_blocked",
            "1 when a storage class cannot move slots (too few nodes or zones would remain).",
            "storage_class",
        )),
        slots_moved: register(
            IntGauge::new(
                "kura_pd_placement_slots_moved",
                "PG slots moved since the cluster was created.",
            )
            .expect("valid metric"),
        ),
        slot_moves: register(
            IntCounter::new(
                "kura_pd_placement_slot_moves_total",
                "PG slots moved by this PD process.",
            )
            .expect("valid metric"),
        ),
        rebalance_steps: register(
            IntCounter::new(
                "kura_pd_placement_steps_total",
                "Placement map steps (slot moves) taken by this PD process.",
            )
            .expect("valid metric"),
        ),
        store_heartbeats: register(
            IntCounter::new(
                "kura_pd_store_heartbeats_total",
                "Store heartbeats received.",
            )
            .expect("valid metric"),
        ),
        region_heartbeats: register(
            IntCounter::new(
                "kura_pd_region_heartbeats_total",
                "Region heartbeats received.",
            )
            .expect("valid metric"),
        ),
        stale_region_heartbeats: register(
            IntCounter::new(
                "kura_pd_stale_region_heartbeats_total",
                "Region heartbeats ignored because PD knew a newer epoch or term.",
            )
            .expect("valid metric"),
        ),
        data_node_heartbeats: register(
            IntCounter::new(
                "kura_pd_data_node_heartbeats_total",
                "Data node heartbeats received.",
            )
            .expect("valid metric"),
        ),
        heartbeats_refused: register(
            IntCounterVec::new(
                Opts::new(
                    "kura_pd_heartbeats_refused_total",
                    "Store and data node heartbeats refused because their uuid does not prove \
                     the id (wrong_uuid, no_uuid) or the id was replaced at its address.",
                ),
                &["kind", "reason"],
            )
            .expect("metric name and labels are valid"),
        ),
        state_saves: register(
            IntCounter::new(
                "kura_pd_state_saves_total",
                "Times PD saved its state durably.",
            )
            .expect("valid metric"),
        ),
        leader: register(
            IntGauge::new(
                "kura_pd_leader",
                "1 while this PD serves as leader (a single PD always), else 0.",
            )
            .expect("valid metric"),
        ),
        raft_term: register(
            IntGauge::new(
                "kura_pd_raft_term",
                "Replicated PD: the Raft term this member is in.",
            )
            .expect("valid metric"),
        ),
        leader_changes: register(
            IntCounter::new(
                "kura_pd_leader_changes_total",
                "Replicated PD: leader changes this member saw.",
            )
            .expect("valid metric"),
        ),
        snapshots_applied: register(
            IntCounter::new(
                "kura_pd_raft_snapshots_applied_total",
                "Replicated PD: snapshots (whole states) this member received from the leader.",
            )
            .expect("valid metric"),
        ),
    })
}
