//! `pdctl`: the PD admin CLI over the HTTP API (docs/pd-http-api.md).
//! [`pdctl_main`] is the whole program, so `kura pdctl …` and the `pdctl`
//! binary are the same thing.

use clap::{Parser, Subcommand};
use serde_json::Value;

mod client;
pub mod table;

use self::client::{another_member_may_answer, base_url, Credentials, PdHttp};
use self::table::render;

#[derive(Debug, Parser)]
#[command(
    name = "pdctl",
    about = "Kura PD admin CLI: inspect stores, regions, data nodes and the placement map; \
             run operators; delete, label, weigh and limit stores; change schedulers and the \
             runtime config",
    long_about = "Kura PD admin CLI. Talks to PD's HTTP admin API (`kura pd --http-listen`, \
                  `http` in kura dev's cluster.json) and prints JSON shaped like pd-ctl's, \
                  or a table with --table. Also runs operators (split-region, transfer-leader, ...), \
                  deletes stores and sets their labels, weights and operator limits, \
                  pauses/removes PD's schedulers (balance-leader, hot-region...) and sets the runtime \
                  schedule config (`config set`); those settings are persisted by PD. \
                  `region topread|topwrite [N]` lists the regions with the most read/written flow per \
                  second.\n\nExit status: 0 on success, 1 when PD is unreachable \
                  or answers with an error (e.g. an unknown id), 2 on bad usage.",
    after_help = "Examples:\n  pdctl store\n  pdctl -u http://127.0.0.1:2379 --table region\n  \
                  pdctl region 2\n  pdctl region key mybucket photos/a.jpg\n  \
                  pdctl region key --hex 6D79627563\n  pdctl placement\n  \
                  pdctl datanode decommission 8\n  pdctl --table datanode\n  \
                  pdctl store delete 4\n  pdctl store label 4 zone=z2\n  \
                  pdctl store weight 4 2 2\n  pdctl store limit 4 30\n  \
                  pdctl config set max-store-down-time 10m\n  \
                  pdctl operator add transfer-leader 12 3\n  pdctl --table operator show\n  \
                  pdctl --table scheduler show\n  pdctl scheduler pause balance-leader\n  \
                  pdctl region topread 5\n  pdctl --table region topwrite"
)]
struct Cli {
    /// PD HTTP admin API URL (scheme optional); several comma-separated for a
    /// replicated PD: tried in turn until one answers (a follower redirects
    /// to the leader by itself).
    /// [default: http://127.0.0.1:2379, or the PD members of --cluster]
    #[arg(short = 'u', long = "pd", env = "PD_ADDR", global = true)]
    url: Option<String>,
    /// kura dev's cluster.json: PD's URLs and credentials (the admin token,
    /// and with `kura dev --tls` the CA and the admin certificate) from it.
    #[arg(long, global = true)]
    cluster: Option<std::path::PathBuf>,
    /// PD's admin token (`kura pd --admin-token-file`); a read token only reads.
    #[arg(long, env = "KURA_PD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for https:// PD URLs. (Before the
    /// command, like --cert and --key: `split-region --key` is a split key.)
    #[arg(long, env = "KURA_PD_CACERT")]
    cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM) to present (the admin certificate may change things).
    #[arg(long, env = "KURA_PD_CERT", requires = "client_key")]
    cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(
        id = "client_key",
        long = "key",
        env = "KURA_PD_KEY",
        requires = "cert"
    )]
    client_key: Option<std::path::PathBuf>,
    /// Print a readable table instead of JSON.
    #[arg(long, global = true)]
    table: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Health of each PD member.
    Health,
    /// PD members and the leader.
    Member,
    /// Cluster id, max replicas, whether the first region exists, counts.
    Cluster,
    /// All metashard stores, or the store with ID; or change one
    /// (`store delete|label|weight|limit`).
    #[command(args_conflicts_with_subcommands = true)]
    Store {
        /// Store id.
        id: Option<u64>,
        #[command(subcommand)]
        action: Option<StoreAction>,
    },
    /// All regions, the region with ID, or (`region key BUCKET [KEY]`, `region key --hex HEX`) the region holding a key;
    /// `region topread|topwrite [N]` (most read/written flow), `region check down-peer|pending-peer|miss-peer|offline-peer`.
    #[command(args_conflicts_with_subcommands = true)]
    Region {
        /// Region id.
        id: Option<u64>,
        #[command(subcommand)]
        by: Option<RegionBy>,
    },
    /// The placement-group maps, one per storage class (REPLICA3, EC_4_2, EC_8_3):
    /// each class's shape and whether it is built (else why not), each PG's
    /// ordered data nodes, and their addresses.
    Placement,
    /// All data nodes, or the data node with ID (slots held, slots still to
    /// move, why a draining node cannot drain); or decommission one.
    #[command(args_conflicts_with_subcommands = true)]
    Datanode {
        /// Data node id.
        id: Option<u64>,
        #[command(subcommand)]
        action: Option<DatanodeAction>,
    },
    /// Run an operator (`operator add split-region ID [--policy P] [--keys HEX...]`,
    /// `merge-region SOURCE TARGET`, `add-peer REGION STORE`,
    /// `remove-peer REGION STORE`, `transfer-peer REGION FROM TO`,
    /// `transfer-leader REGION STORE`, `scatter-region REGION`) or list them
    /// (`operator show`), or cancel one (`operator remove REGION`).
    Operator {
        #[command(subcommand)]
        op: OperatorCmd,
    },
    /// PD's schedulers (replica-checker, balance-region, balance-leader, hot-region):
    /// `scheduler show`, `scheduler pause|resume|add|remove NAME` (persisted).
    Scheduler {
        #[command(subcommand)]
        action: SchedulerCmd,
    },
    /// The runtime schedule config: `config show`, `config set KEY VALUE`.
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
}

#[derive(Debug, Subcommand)]
enum SchedulerCmd {
    /// Every scheduler and whether it is paused, the round interval, and
    /// each store's leader transfers in the last minute against the limit.
    Show,
    /// Stop scheduler NAME from making new operators (running ones finish).
    Pause {
        /// Scheduler name: replica-checker, balance-region, balance-leader, hot-region.
        name: String,
    },
    /// Let scheduler NAME run again.
    Resume {
        /// Scheduler name, e.g. balance-leader.
        name: String,
    },
    /// Enable scheduler NAME again after `scheduler remove` (persisted).
    Add {
        /// Scheduler name, e.g. balance-region.
        name: String,
    },
    /// Disable scheduler NAME (persisted; `scheduler add` enables it).
    Remove {
        /// Scheduler name, e.g. balance-region.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum StoreAction {
    /// Remove store ID: it becomes Offline, PD moves every region peer off
    /// it (to a store in the same zone if there is one, else to a zone the
    /// region does not use), then marks it Tombstone (it gets no peer again
    /// and may be stopped). Refused when fewer than max-replicas usable
    /// stores would remain.
    Delete {
        /// Store id.
        id: u64,
    },
    /// Set labels of store ID (persisted, merged over the labels it
    /// registers with; `KEY=` drops an override). `zone` changes are
    /// respected by the one-voter-per-zone checks from the next round.
    Label {
        /// Store id.
        id: u64,
        /// KEY=VALUE pairs, e.g. zone=z2 rack=r1.
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Set the weights of store ID (persisted): balance-leader evens out
    /// leaders/LEADER_WEIGHT, balance-region region peers/REGION_WEIGHT.
    Weight {
        /// Store id.
        id: u64,
        /// Leader weight (> 0; default 1).
        leader_weight: f64,
        /// Region weight (> 0; default 1).
        region_weight: f64,
    },
    /// Every store's operator limit per minute (leader transfers and peer
    /// moves it may take part in) and its use in the last minute; with ID
    /// and RATE, set that store's own limit (persisted).
    Limit {
        /// Store id (alone: show that store's limit).
        id: Option<u64>,
        /// Operators per minute.
        rate: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// The schedule settings in effect (pd-ctl's shape: `schedule` and
    /// `replication`), flags overridden by `config set`.
    Show,
    /// Set one schedule setting at runtime (persisted and replicated; wins
    /// over the flag from now on): schedule-interval, leader-transfer-limit,
    /// max-store-down-time, split-merge-interval, max-merge-region-keys,
    /// max-merge-region-size (MiB), hot-region-min-read-bytes, hot-region-min-read-keys,
    /// hot-region-min-write-bytes, hot-region-min-write-keys (per second). Durations as 30s,
    /// 5m, 1h30m or seconds.
    Set {
        /// Kebab-case key, e.g. max-store-down-time.
        key: String,
        /// New value, e.g. 1m.
        value: String,
    },
}

#[derive(Debug, Subcommand)]
enum DatanodeAction {
    /// Move every slot of data node ID to other nodes, a few per step, then
    /// mark it decommissioned (state Tombstone); it can then be stopped.
    Decommission {
        /// Data node id.
        id: u64,
    },
    /// Stop decommissioning data node ID (or take a decommissioned one back):
    /// it becomes an active member again and gets its share of slots back.
    CancelDecommission {
        /// Data node id.
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorCmd {
    /// Add an operator and wait until it is done.
    Add {
        #[command(subcommand)]
        kind: AddOperator,
    },
    /// Running operators (admin and scheduler-made) and the last finished
    /// ones with their outcome.
    Show,
    /// Cancel the running operator of REGION_ID: a step in flight finishes,
    /// the steps after it do not run (e.g. a peer move stopped after its
    /// add step keeps both peers). Exit 1 when the region has none.
    Remove {
        /// Region id.
        region_id: u64,
    },
}

#[derive(Debug, Subcommand)]
enum AddOperator {
    /// Split a region in two: at KEY (hex, must fall strictly inside the
    /// region), else at the middle of its keys rounded to an object boundary.
    ///
    /// Policies (pd-ctl's names): `usekey` splits at each of `--keys`
    /// (required); `scan` (the default without keys) splits at the middle of
    /// the region's keys, which its leader finds by scanning them, rounded to
    /// an object boundary; `approximate` is the same as `scan` in Kura (no
    /// size-estimate split exists).
    SplitRegion {
        /// Region id.
        region_id: u64,
        /// approximate, scan or usekey (default: usekey with --keys, else scan).
        #[arg(long, value_parser = ["approximate", "scan", "usekey"])]
        policy: Option<String>,
        /// Split keys as hex (each strictly inside the region); `--key` also works.
        #[arg(long = "keys", alias = "key", num_args = 1..)]
        keys: Vec<String>,
    },
    /// Add a peer of REGION on STORE: a learner that catches up by snapshot,
    /// then promoted to voter.
    AddPeer { region_id: u64, store_id: u64 },
    /// Remove REGION's peer on STORE (leadership moves off it first); the
    /// store deletes the peer's data.
    RemovePeer { region_id: u64, store_id: u64 },
    /// Move REGION's peer from store FROM to store TO (add, then remove);
    /// refused if two voters would share a zone.
    TransferPeer {
        region_id: u64,
        from_store_id: u64,
        to_store_id: u64,
    },
    /// Fold region SOURCE into the adjacent region TARGET (same stores).
    /// SOURCE refuses requests from its prepare until the merge commits
    /// (clients retry; usually well under a second). Every store must have
    /// SOURCE caught up, else the merge is rolled back and reported.
    MergeRegion {
        /// The region that disappears.
        source_region_id: u64,
        /// The adjacent region that takes over its range.
        target_region_id: u64,
    },
    /// Re-place REGION's peers and leader on the stores holding the fewest
    /// peers and leaders (keeping one voter per zone): one move-peer per
    /// voter worth moving, then a transfer-leader; waits until done.
    /// `operator remove REGION` stops it after the running step.
    ScatterRegion {
        /// Region id.
        region_id: u64,
    },
    /// Move a region's leader to its peer on STORE and wait (at most 15 s)
    /// until PD sees it there. Fails (exit 1) for an unknown region or
    /// store, a store without a voter of the region, or a region with
    /// another operator running.
    TransferLeader {
        /// Region id.
        region_id: u64,
        /// Target store id.
        store_id: u64,
    },
}

impl AddOperator {
    /// The `POST operators` body.
    fn body(&self) -> crate::operator::OperatorRequest {
        match self {
            AddOperator::SplitRegion {
                region_id,
                policy,
                keys,
            } => crate::operator::OperatorRequest {
                name: "split-region".into(),
                region_id: *region_id,
                keys: keys.clone(),
                policy: policy.clone().unwrap_or_default(),
                ..Default::default()
            },
            AddOperator::AddPeer {
                region_id,
                store_id,
            } => crate::operator::OperatorRequest {
                name: "add-peer".into(),
                region_id: *region_id,
                store_id: *store_id,
                ..Default::default()
            },
            AddOperator::RemovePeer {
                region_id,
                store_id,
            } => crate::operator::OperatorRequest {
                name: "remove-peer".into(),
                region_id: *region_id,
                store_id: *store_id,
                ..Default::default()
            },
            AddOperator::TransferPeer {
                region_id,
                from_store_id,
                to_store_id,
            } => crate::operator::OperatorRequest {
                name: "transfer-peer".into(),
                region_id: *region_id,
                from_store_id: *from_store_id,
                to_store_id: *to_store_id,
                ..Default::default()
            },
            AddOperator::MergeRegion {
                source_region_id,
                target_region_id,
            } => crate::operator::OperatorRequest {
                name: "merge-region".into(),
                source_region_id: *source_region_id,
                target_region_id: *target_region_id,
                ..Default::default()
            },
            AddOperator::ScatterRegion { region_id } => crate::operator::OperatorRequest {
                name: crate::schedule::scatter::SCATTER_REGION.into(),
                region_id: *region_id,
                ..Default::default()
            },
            AddOperator::TransferLeader {
                region_id,
                store_id,
            } => crate::operator::OperatorRequest {
                name: crate::schedule::TRANSFER_LEADER.into(),
                region_id: *region_id,
                to_store_id: *store_id,
                ..Default::default()
            },
        }
    }
}

#[derive(Debug, Subcommand)]
enum RegionBy {
    /// The region holding the metadata of object KEY in BUCKET (PD reads the
    /// bucket's id from its record and looks up the object's record prefix;
    /// without KEY: where the bucket's objects begin), or with `--hex HEX`
    /// the region holding a raw metadata key.
    Key {
        /// A raw metadata key as hex, e.g. 0A0B ("" is the first key).
        #[arg(long, conflicts_with_all = ["bucket", "key"])]
        hex: Option<String>,
        /// Bucket name.
        #[arg(required_unless_present = "hex")]
        bucket: Option<String>,
        /// Object key (as is, e.g. photos/a.jpg).
        key: Option<String>,
    },
    /// Regions with a problem: down-peer (a peer the leader has not heard
    /// from), pending-peer (a peer that needs a snapshot), miss-peer (fewer
    /// voters than max-replicas), offline-peer (a peer on a store being
    /// deleted).
    Check {
        #[arg(value_parser = ["down-peer", "pending-peer", "miss-peer", "offline-peer"])]
        kind: String,
    },
    /// The regions with the most read flow (Get/Scan answers, per second,
    /// from each leader's last heartbeat sample), most first.
    Topread {
        /// How many regions.
        #[arg(default_value_t = 16)]
        limit: usize,
    },
    /// The regions with the most written flow (applied writes, per
    /// second, from each leader's last heartbeat sample), most first.
    Topwrite {
        /// How many regions.
        #[arg(default_value_t = 16)]
        limit: usize,
    },
}

/// Which table layout a response gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Members,
    Cluster,
    Stores,
    Store,
    Regions,
    Region,
    /// `region topread|topwrite`: regions with their flow.
    FlowRegions,
    Placement,
    DataNodes,
    DataNode,
    Operator,
    Operators,
    Schedulers,
    Limits,
    Config,
    Cancelled,
}

impl Command {
    /// API path (below the prefix) and the response's shape.
    fn request(&self) -> (String, Shape) {
        match self {
            Command::Health => ("health".into(), Shape::Members),
            Command::Member => ("members".into(), Shape::Members),
            Command::Cluster => ("cluster".into(), Shape::Cluster),
            Command::Store {
                id: None,
                action: None,
            } => ("stores".into(), Shape::Stores),
            Command::Store {
                id: Some(id),
                action: None,
            } => (format!("store/{id}"), Shape::Store),
            Command::Store {
                action: Some(StoreAction::Delete { id }),
                ..
            } => (format!("store/{id}"), Shape::Store),
            Command::Store {
                action: Some(StoreAction::Label { id, .. }),
                ..
            } => (format!("store/{id}/label"), Shape::Store),
            Command::Store {
                action: Some(StoreAction::Weight { id, .. }),
                ..
            } => (format!("store/{id}/weight"), Shape::Store),
            Command::Store {
                action:
                    Some(StoreAction::Limit {
                        id: Some(id),
                        rate: Some(_),
                    }),
                ..
            } => (format!("store/{id}/limit"), Shape::Limits),
            Command::Store {
                action: Some(StoreAction::Limit { .. }),
                ..
            } => ("stores/limit".into(), Shape::Limits),
            Command::Config {
                action: ConfigCmd::Show,
            }
            | Command::Config {
                action: ConfigCmd::Set { .. },
            } => ("config".into(), Shape::Config),
            Command::Region {
                by:
                    Some(RegionBy::Key {
                        hex: Some(hex_key), ..
                    }),
                ..
            } => (
                format!("region/key/{}", hex_key.trim_start_matches("0x")),
                Shape::Region,
            ),
            Command::Region {
                by: Some(RegionBy::Key { bucket, key, .. }),
                ..
            } => {
                let bucket = bucket.as_deref().unwrap_or_default();
                match key {
                    None => (format!("region/bucket/{bucket}"), Shape::Region),
                    Some(k) => (
                        format!("region/bucket/{bucket}/{}", hex::encode_upper(k)),
                        Shape::Region,
                    ),
                }
            }
            Command::Region {
                by: Some(RegionBy::Check { kind }),
                ..
            } => (format!("regions/check/{kind}"), Shape::Regions),
            Command::Region {
                by: Some(RegionBy::Topread { limit }),
                ..
            } => (
                format!("regions/readflow?limit={limit}"),
                Shape::FlowRegions,
            ),
            Command::Region {
                by: Some(RegionBy::Topwrite { limit }),
                ..
            } => (
                format!("regions/writeflow?limit={limit}"),
                Shape::FlowRegions,
            ),
            Command::Region {
                id: Some(id),
                by: None,
            } => (format!("region/id/{id}"), Shape::Region),
            Command::Region { id: None, by: None } => ("regions".into(), Shape::Regions),
            Command::Placement => ("placement".into(), Shape::Placement),
            Command::Datanode {
                id: None,
                action: None,
            } => ("datanodes".into(), Shape::DataNodes),
            Command::Datanode {
                id: Some(id),
                action: None,
            } => (format!("datanode/{id}"), Shape::DataNode),
            Command::Datanode {
                action:
                    Some(
                        DatanodeAction::Decommission { id }
                        | DatanodeAction::CancelDecommission { id },
                    ),
                ..
            } => (format!("datanode/{id}/decommission"), Shape::DataNode),
            Command::Operator {
                op: OperatorCmd::Show,
            } => ("operators".into(), Shape::Operators),
            Command::Operator {
                op: OperatorCmd::Remove { region_id },
            } => (format!("operators/{region_id}"), Shape::Cancelled),
            Command::Operator { .. } => ("operators".into(), Shape::Operator),
            Command::Scheduler {
                action: SchedulerCmd::Show,
            } => ("schedulers".into(), Shape::Schedulers),
            Command::Scheduler {
                action: SchedulerCmd::Pause { name },
            } => (format!("schedulers/{name}/pause"), Shape::Schedulers),
            Command::Scheduler {
                action: SchedulerCmd::Resume { name },
            } => (format!("schedulers/{name}/resume"), Shape::Schedulers),
            Command::Scheduler {
                action: SchedulerCmd::Add { name },
            } => (format!("schedulers/{name}/add"), Shape::Schedulers),
            Command::Scheduler {
                action: SchedulerCmd::Remove { name },
            } => (format!("schedulers/{name}/remove"), Shape::Schedulers),
        }
    }

    /// `store limit ID [RATE]` shows only that store of PD's answer.
    fn narrow(&self, v: Value, body: String) -> Result<(Value, String), String> {
        let Command::Store {
            action: Some(StoreAction::Limit { id: Some(id), .. }),
            ..
        } = self
        else {
            return Ok((v, body));
        };
        let one = v
            .get(id.to_string())
            .cloned()
            .ok_or_else(|| format!("store {id} not found"))?;
        let v = serde_json::json!({ id.to_string(): one });
        let body = serde_json::to_string_pretty(&v).unwrap_or_default();
        Ok((v, body))
    }

    /// Usage errors clap cannot see (exit 2).
    fn check(&self) -> Result<(), String> {
        match self {
            Command::Store {
                action: Some(StoreAction::Label { labels, .. }),
                ..
            } => crate::config::parse_labels(labels).map(|_| ()),
            Command::Store {
                action:
                    Some(StoreAction::Weight {
                        leader_weight,
                        region_weight,
                        ..
                    }),
                ..
            } => crate::config::check_weight("LEADER_WEIGHT", *leader_weight)
                .and(crate::config::check_weight("REGION_WEIGHT", *region_weight))
                .map(|_| ()),
            Command::Store {
                action:
                    Some(StoreAction::Limit {
                        id: None,
                        rate: Some(_),
                    }),
                ..
            } => Err("store limit RATE needs the store id: store limit ID RATE".into()),
            Command::Operator {
                op:
                    OperatorCmd::Add {
                        kind: AddOperator::SplitRegion { policy, keys, .. },
                    },
            } => {
                let req = crate::operator::OperatorRequest {
                    name: "split-region".into(),
                    region_id: 1,
                    keys: keys.clone(),
                    policy: policy.clone().unwrap_or_default(),
                    ..Default::default()
                };
                crate::operator::parse_split(&req)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            _ => Ok(()),
        }
    }

    /// The JSON body of a POST (None: no body, see [`Self::method`]).
    fn body(&self) -> Option<Value> {
        use serde_json::json;
        match self {
            Command::Operator {
                op: OperatorCmd::Add { kind },
            } => serde_json::to_value(kind.body()).ok(),
            Command::Scheduler {
                action:
                    SchedulerCmd::Pause { .. }
                    | SchedulerCmd::Resume { .. }
                    | SchedulerCmd::Add { .. }
                    | SchedulerCmd::Remove { .. },
            } => Some(json!({})),
            Command::Store {
                action: Some(StoreAction::Label { labels, .. }),
                ..
            } => Some(Value::Object(
                labels
                    .iter()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), Value::from(v)))
                    .collect(),
            )),
            Command::Store {
                action:
                    Some(StoreAction::Weight {
                        leader_weight,
                        region_weight,
                        ..
                    }),
                ..
            } => Some(json!({"leader": leader_weight, "region": region_weight})),
            Command::Store {
                action:
                    Some(StoreAction::Limit {
                        id: Some(_),
                        rate: Some(rate),
                    }),
                ..
            } => Some(json!({ "rate": rate })),
            Command::Config {
                action: ConfigCmd::Set { key, value },
            } => Some(json!({ key.as_str(): value })),
            _ => None,
        }
    }

    /// The HTTP method: GET but for the admin actions.
    fn method(&self) -> reqwest::Method {
        match self {
            Command::Datanode {
                action: Some(DatanodeAction::Decommission { .. }),
                ..
            } => reqwest::Method::POST,
            Command::Datanode {
                action: Some(DatanodeAction::CancelDecommission { .. }),
                ..
            } => reqwest::Method::DELETE,
            Command::Scheduler {
                action: SchedulerCmd::Pause { .. } | SchedulerCmd::Resume { .. },
            } => reqwest::Method::POST,
            Command::Store {
                action: Some(StoreAction::Delete { .. }),
                ..
            }
            | Command::Operator {
                op: OperatorCmd::Remove { .. },
            } => reqwest::Method::DELETE,
            _ => reqwest::Method::GET,
        }
    }
}

/// Runs pdctl with `args` (args[0] is the program name); returns the exit code.
/// PD's URLs and pdctl's credentials: from --cluster's cluster.json, then
/// overridden by -u, --token, --cacert, --cert/--key.
fn connection(cli: &Cli) -> Result<(String, Credentials), String> {
    use std::path::PathBuf;
    let mut urls = None;
    let mut token = None;
    let (mut ca, mut cert): (Option<PathBuf>, Option<(PathBuf, PathBuf)>) = (None, None);
    if let Some(path) = &cli.cluster {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--cluster {}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("--cluster {}: {e}", path.display()))?;
        let path_of = |v: &Value| v.as_str().map(PathBuf::from);
        let tls = v.get("tls").filter(|t| !t.is_null());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let members: Vec<String> = v["components"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["role"] == "pd")
            .filter_map(|c| c["http"].as_str().map(|h| format!("{scheme}://{h}")))
            .collect();
        urls = Some(if members.is_empty() {
            v["pd_http"].as_str().unwrap_or_default().to_string()
        } else {
            members.join(",")
        });
        if let Some(f) = path_of(&v["pd_token_file"]) {
            token = Some(
                std::fs::read_to_string(&f)
                    .map_err(|e| format!("PD token file {}: {e}", f.display()))?
                    .trim()
                    .to_string(),
            );
        }
        if let Some(t) = tls {
            ca = path_of(&t["ca"]);
            cert = path_of(&t["admin_cert"]).zip(path_of(&t["admin_key"]));
        }
    }
    let urls = cli
        .url
        .clone()
        .or(urls)
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let token = cli.token.clone().or(token);
    let ca = cli.cacert.clone().or(ca);
    let cert = cli.cert.clone().zip(cli.client_key.clone()).or(cert);
    let tls = match &ca {
        None => None,
        Some(ca) => Some(
            kura_pd_client::tls::rustls_client_from_pem(
                ca,
                cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            )
            .map_err(|e| e.to_string())?,
        ),
    };
    Ok((urls, Credentials { token, tls }))
}

pub fn pdctl_main(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    if let Command::Region {
        by: Some(RegionBy::Key {
            hex: Some(hex_key), ..
        }),
        ..
    } = &cli.command
    {
        if hex::decode(hex_key.trim_start_matches("0x")).is_err() {
            eprintln!("pdctl: the key must be hex (e.g. 0A1B), got {hex_key:?}");
            return 2;
        }
    }
    if let Command::Region {
        by: Some(RegionBy::Key {
            bucket: Some(b), ..
        }),
        ..
    } = &cli.command
    {
        if b.is_empty() || b.contains('/') {
            eprintln!("pdctl: {b:?} is not a bucket name");
            return 2;
        }
    }
    if let Err(msg) = cli.command.check() {
        eprintln!("pdctl: {msg}");
        return 2;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pdctl: cannot start the runtime: {e}");
            return 1;
        }
    };
    let (path, shape) = cli.command.request();
    let (urls, creds) = match connection(&cli) {
        Ok(x) => x,
        Err(msg) => {
            eprintln!("pdctl: {msg}");
            return 2;
        }
    };
    let http = match PdHttp::new(creds) {
        Ok(h) => h,
        Err(msg) => {
            eprintln!("pdctl: {msg}");
            return 1;
        }
    };
    let bases: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(base_url)
        .collect();
    let mut answer = Err(format!("no PD URL given in {urls:?}"));
    let body = cli.command.body();
    for (i, base) in bases.iter().enumerate() {
        // A command with a body is a POST (store label, config set, operators).
        let method = match body {
            Some(_) => reqwest::Method::POST,
            None => cli.command.method(),
        };
        answer = rt.block_on(http.call(base, method, &path, body.as_ref()));
        match &answer {
            Err(msg) if i + 1 < bases.len() && another_member_may_answer(msg) => continue,
            _ => break,
        }
    }
    match answer {
        Ok((v, body)) => {
            let (v, body) = match cli.command.narrow(v, body) {
                Ok(vb) => vb,
                Err(msg) => {
                    eprintln!("pdctl: {msg}");
                    return 1;
                }
            };
            if cli.table {
                println!("{}", render(shape, &v, true));
            } else {
                // Verbatim: PD already pretty-prints, in pd-ctl's field order.
                println!("{}", body.trim_end());
            }
            0
        }
        Err(msg) => {
            eprintln!("pdctl: {msg}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("pdctl").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn commands_map_to_api_paths() {
        assert_eq!(
            parse(&["store"]).command.request(),
            ("stores".into(), Shape::Stores)
        );
        assert_eq!(
            parse(&["store", "4"]).command.request(),
            ("store/4".into(), Shape::Store)
        );
        assert_eq!(
            parse(&["region"]).command.request(),
            ("regions".into(), Shape::Regions)
        );
        assert_eq!(
            parse(&["region", "7"]).command.request(),
            ("region/id/7".into(), Shape::Region)
        );
        assert_eq!(
            parse(&["region", "key", "--hex", "0A0B"]).command.request(),
            ("region/key/0A0B".into(), Shape::Region)
        );
        assert_eq!(
            parse(&["region", "key", "--hex", ""]).command.request(),
            ("region/key/".into(), Shape::Region)
        );
        assert_eq!(
            parse(&["region", "key", "photos"]).command.request(),
            ("region/bucket/photos".into(), Shape::Region)
        );
        assert_eq!(
            parse(&["region", "key", "photos", "a/b.jpg"])
                .command
                .request(),
            ("region/bucket/photos/612F622E6A7067".into(), Shape::Region)
        );
        assert!(Cli::try_parse_from(["pdctl", "region", "key"]).is_err());
        assert!(Cli::try_parse_from(["pdctl", "region", "key", "--hex", "0A", "b"]).is_err());
        assert_eq!(
            parse(&["--table", "datanode"]).command.request(),
            ("datanodes".into(), Shape::DataNodes)
        );
        let cli = parse(&["datanode", "3", "-u", "10.0.0.1:2379", "--table"]);
        assert!(cli.table);
        let (urls, creds) = connection(&cli).expect("connection");
        assert_eq!(base_url(&urls), "http://10.0.0.1:2379");
        assert!(creds.tls.is_none());
        assert!(Cli::try_parse_from(["pdctl", "region", "x"]).is_err());
        let del = parse(&["store", "delete", "4"]).command;
        assert_eq!(
            (del.request(), del.method()),
            (("store/4".into(), Shape::Store), reqwest::Method::DELETE)
        );
        assert!(Cli::try_parse_from(["pdctl", "store", "delete"]).is_err());
        let get = reqwest::Method::GET;
        assert_eq!(parse(&["datanode", "3"]).command.method(), get);
        let dec = parse(&["datanode", "decommission", "3"]).command;
        assert_eq!(
            (dec.request(), dec.method()),
            (
                ("datanode/3/decommission".into(), Shape::DataNode),
                reqwest::Method::POST
            )
        );
        let cancel = parse(&["datanode", "cancel-decommission", "3"]).command;
        assert_eq!(
            (cancel.request(), cancel.method()),
            (
                ("datanode/3/decommission".into(), Shape::DataNode),
                reqwest::Method::DELETE
            )
        );
        assert!(Cli::try_parse_from(["pdctl", "datanode", "decommission"]).is_err());
        let op = parse(&["operator", "add", "split-region", "3", "--key", "0A"]);
        assert_eq!(op.command.request(), ("operators".into(), Shape::Operator));
        let Command::Operator {
            op: OperatorCmd::Add { kind },
        } = op.command
        else {
            panic!("operator command");
        };
        assert_eq!(
            kind.body(),
            crate::operator::OperatorRequest {
                name: "split-region".into(),
                region_id: 3,
                keys: vec!["0A".into()],
                ..Default::default()
            }
        );
        let op = parse(&["operator", "add", "merge-region", "7", "3"]);
        let Command::Operator {
            op: OperatorCmd::Add { kind },
        } = op.command
        else {
            panic!("operator command");
        };
        assert_eq!(
            kind.body(),
            crate::operator::OperatorRequest {
                name: "merge-region".into(),
                source_region_id: 7,
                target_region_id: 3,
                ..Default::default()
            }
        );
        let op = parse(&["operator", "add", "transfer-leader", "7", "2"]);
        let Command::Operator {
            op: OperatorCmd::Add { kind },
        } = op.command
        else {
            panic!("operator command");
        };
        assert_eq!(
            serde_json::to_value(kind.body()).unwrap(),
            json!({"name": "transfer-leader", "region_id": 7, "keys": [], "to_store_id": 2})
        );
        assert!(Cli::try_parse_from(["pdctl", "operator", "add", "transfer-leader", "7"]).is_err());
        assert_eq!(
            parse(&["operator", "show"]).command.request(),
            ("operators".into(), Shape::Operators)
        );
        let pause = parse(&["scheduler", "pause", "balance-leader"]).command;
        assert_eq!(
            (pause.request(), pause.method()),
            (
                ("schedulers/balance-leader/pause".into(), Shape::Schedulers),
                reqwest::Method::POST
            )
        );
        assert_eq!(
            parse(&["scheduler", "show"]).command.request(),
            ("schedulers".into(), Shape::Schedulers)
        );
    }

    #[test]
    fn store_config_and_scheduler_admin_commands_map_to_posts() {
        let req = |args: &[&str]| {
            let c = parse(args).command;
            (c.request().0, c.body(), c.check())
        };
        assert_eq!(
            req(&["store", "label", "3", "zone=z2", "rack=r1"]),
            (
                "store/3/label".into(),
                Some(json!({"zone": "z2", "rack": "r1"})),
                Ok(())
            )
        );
        assert!(req(&["store", "label", "3", "zone"]).2.is_err());
        assert!(Cli::try_parse_from(["pdctl", "store", "label", "3"]).is_err());
        assert_eq!(
            req(&["store", "weight", "3", "2", "0.5"]),
            (
                "store/3/weight".into(),
                Some(json!({"leader": 2.0, "region": 0.5})),
                Ok(())
            )
        );
        assert!(req(&["store", "weight", "3", "0", "1"]).2.is_err());
        assert_eq!(req(&["store", "limit"]).0, "stores/limit");
        assert_eq!(
            req(&["store", "limit", "3"]),
            ("stores/limit".into(), None, Ok(()))
        );
        assert_eq!(
            req(&["store", "limit", "3", "20"]),
            ("store/3/limit".into(), Some(json!({"rate": 20})), Ok(()))
        );
        assert_eq!(req(&["config", "show"]), ("config".into(), None, Ok(())));
        let split = |args: &[&str]| {
            let mut v = vec!["operator", "add", "split-region", "3"];
            v.extend_from_slice(args);
            let c = parse(&v).command;
            (c.body(), c.check().is_ok())
        };
        assert_eq!(
            split(&["--policy", "usekey", "--keys", "0A", "0B"]),
            (
                Some(
                    json!({"name": "split-region", "region_id": 3, "keys": ["0A", "0B"],
                            "policy": "usekey"})
                ),
                true
            )
        );
        assert!(!split(&["--policy", "usekey"]).1, "usekey needs keys");
        assert!(!split(&["--policy", "scan", "--keys", "0A"]).1);
        assert!(split(&["--policy", "approximate"]).1);
        assert!(split(&["--key", "0A"]).1, "--key still works");
        assert!(Cli::try_parse_from([
            "pdctl",
            "operator",
            "add",
            "split-region",
            "3",
            "--policy",
            "size"
        ])
        .is_err());
        assert_eq!(
            parse(&["operator", "add", "scatter-region", "9"])
                .command
                .body(),
            Some(json!({"name": "scatter-region", "region_id": 9, "keys": []}))
        );
        let rm = parse(&["operator", "remove", "12"]).command;
        assert_eq!(
            (rm.request(), rm.method(), rm.body()),
            (
                ("operators/12".into(), Shape::Cancelled),
                reqwest::Method::DELETE,
                None
            )
        );
        assert_eq!(
            req(&["config", "set", "max-store-down-time", "1m"]),
            (
                "config".into(),
                Some(json!({"max-store-down-time": "1m"})),
                Ok(())
            )
        );
        assert_eq!(
            req(&["scheduler", "remove", "balance-region"]),
            (
                "schedulers/balance-region/remove".into(),
                Some(json!({})),
                Ok(())
            )
        );
        assert_eq!(
            req(&["scheduler", "add", "balance-region"]).0,
            "schedulers/balance-region/add"
        );
        // `store limit ID` narrows PD's answer to that store.
        let all = json!({"1": {"operators-per-minute": 5}, "2": {"operators-per-minute": 9}});
        let one = parse(&["store", "limit", "2"])
            .command
            .narrow(all.clone(), String::new())
            .unwrap()
            .0;
        assert_eq!(one, json!({"2": {"operators-per-minute": 9}}));
        assert!(parse(&["store", "limit", "7"])
            .command
            .narrow(all, String::new())
            .is_err());
        let t = render(
            Shape::Config,
            &json!({"schedule": {"max-store-down-time": "1m"}, "replication": {"max-replicas": 3}}),
            true,
        );
        assert!(t.contains("schedule     max-store-down-time  1m"), "{t}");
    }

    #[test]
    fn top_flow_commands_and_table() {
        assert_eq!(
            parse(&["region", "topread"]).command.request(),
            ("regions/readflow?limit=16".into(), Shape::FlowRegions)
        );
        assert_eq!(
            parse(&["region", "topwrite", "3"]).command.request(),
            ("regions/writeflow?limit=3".into(), Shape::FlowRegions)
        );
        let v = json!({"count": 1, "regions": [{"id": 7, "peers": [{"id": 8, "store_id": 1},
            {"id": 9, "store_id": 2}], "leader": {"id": 9, "store_id": 2},
            "read_bytes": 4096, "read_keys": 12, "written_bytes": 0, "written_keys": 0}]});
        let t = render(Shape::FlowRegions, &v, true);
        let row = t.lines().nth(1).unwrap();
        for cell in ["7", "2", "1,2", "4096", "12"] {
            assert!(row.split_whitespace().any(|c| c == cell), "{cell} in {t}");
        }
    }

    #[test]
    fn cluster_json_gives_every_pd_member_and_the_token() {
        let d = tempfile::tempdir().expect("tempdir");
        let token = d.path().join("pd-admin.token");
        std::fs::write(&token, "s3cr3t-token-0123456789\n").expect("token");
        let file = d.path().join("cluster.json");
        let v = serde_json::json!({
            "s3": "http://127.0.0.1:9000",
            "pd_http": "http://127.0.0.1:9002",
            "pd_token_file": token,
            "components": [
                {"role": "pd", "http": "127.0.0.1:9002"},
                {"role": "pd", "http": "127.0.0.1:9005"},
                {"role": "metashard", "grpc": "127.0.0.1:9010"}
            ]
        });
        std::fs::write(&file, v.to_string()).expect("cluster.json");
        let f = file.display().to_string();
        let (urls, creds) = connection(&parse(&["--cluster", &f, "store"])).expect("connection");
        assert_eq!(urls, "http://127.0.0.1:9002,http://127.0.0.1:9005");
        assert_eq!(creds.token.as_deref(), Some("s3cr3t-token-0123456789"));
        // Flags win over the file.
        let (urls, creds) = connection(&parse(&[
            "--cluster",
            &f,
            "-u",
            "h:1",
            "--token",
            "t",
            "store",
        ]))
        .expect("connection");
        assert_eq!((urls.as_str(), creds.token.as_deref()), ("h:1", Some("t")));
    }
}
