//! pdctl's `--table` output: one layout per response [`Shape`].

use serde_json::Value;

use super::Shape;

/// Pretty JSON, or a table for people.
pub(super) fn render(shape: Shape, v: &Value, table: bool) -> String {
    if !table {
        return serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    }
    let list = |key: &str| {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match shape {
        Shape::Members => {
            let members = match v {
                Value::Array(a) => a.clone(),
                _ => list("members"),
            };
            let table = grid(
                &["NAME", "MEMBER_ID", "CLIENT_URLS", "GRPC", "HEALTH"],
                members.iter().map(|m| {
                    cells(
                        m,
                        &[
                            "/name",
                            "/member_id",
                            "/client_urls",
                            "/grpc_address",
                            "/health",
                        ],
                    )
                }),
            );
            match v.get("leader") {
                None => table,
                Some(Value::Null) => format!("{table}\nleader: none known yet"),
                Some(l) => format!("{table}\nleader: {}", text(l.get("name"))),
            }
        }
        Shape::Cluster => match v.as_object() {
            Some(o) => grid(
                &["FIELD", "VALUE"],
                o.iter().map(|(k, val)| vec![k.clone(), text(Some(val))]),
            ),
            None => v.to_string(),
        },
        Shape::Stores | Shape::Store => {
            let stores = if shape == Shape::Store {
                vec![v.clone()]
            } else {
                list("stores")
            };
            grid(
                &[
                    "ID",
                    "ADDRESS",
                    "STATE",
                    "UUID",
                    "REPLACED_BY",
                    "LABELS",
                    "REGIONS",
                    "LEADERS",
                    "LAST_HEARTBEAT",
                ],
                stores.iter().map(|s| {
                    let mut row = cells(
                        s,
                        &[
                            "/store/id",
                            "/store/address",
                            "/store/state_name",
                            "/store/uuid_prefix",
                            "/store/replaced_by",
                        ],
                    );
                    row.push(labels_text(s.pointer("/store/labels")));
                    row.extend(cells(
                        s,
                        &[
                            "/status/region_count",
                            "/status/leader_count",
                            "/status/last_heartbeat_ts",
                        ],
                    ));
                    row
                }),
            )
        }
        Shape::Regions | Shape::Region => {
            let regions = if shape == Shape::Region {
                vec![v.clone()]
            } else {
                list("regions")
            };
            grid(
                &[
                    "ID",
                    "START_KEY",
                    "END_KEY",
                    "CONF_VER",
                    "VERSION",
                    "PEER_STORES",
                    "LEADER_STORE",
                    "KEYS",
                    "SIZE",
                ],
                regions.iter().map(|r| {
                    let mut row = cells(
                        r,
                        &[
                            "/id",
                            "/start_key",
                            "/end_key",
                            "/epoch/conf_ver",
                            "/epoch/version",
                        ],
                    );
                    let peers = r
                        .get("peers")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    row.push(
                        peers
                            .iter()
                            .map(|p| text(p.get("store_id")))
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                    row.extend(cells(
                        r,
                        &["/leader/store_id", "/approximate_keys", "/approximate_size"],
                    ));
                    row
                }),
            )
        }
        Shape::FlowRegions => flow_grid(&list("regions")),
        Shape::Placement => {
            let classes = list("classes");
            let head = format!("placement maps version {}", text(v.get("version")));
            let moving = match v.get("rebalance") {
                Some(r) => format!(
                    "\nslot moves: {} pending, {} done (last step {}); at most {} per class every {} s",
                    text(r.get("pending_moves")),
                    text(r.get("slots_moved")),
                    match r.get("last_step_ts").and_then(Value::as_str) {
                        None | Some("") => "never".to_string(),
                        Some(ts) => ts.to_string(),
                    },
                    text(r.get("max_moves_per_step")),
                    text(r.get("interval_secs")),
                ) + &repair_line(r),
                None => String::new(),
            };
            let head = format!("{head}{moving}");
            let summary = grid(
                &["CLASS", "K", "M", "BUILT", "PGS", "PENDING", "BLOCKER"],
                classes.iter().map(|c| {
                    let mut row = cells(
                        c,
                        &["/storage_class", "/data_shards", "/parity_shards", "/built"],
                    );
                    row.push(
                        c.get("groups")
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len)
                            .to_string(),
                    );
                    row.push(text(c.get("pending_moves")));
                    row.push(match c.get("move_blocker") {
                        Some(Value::String(why)) => why.clone(),
                        _ => text(c.get("blocker")),
                    });
                    row
                }),
            );
            let groups = grid(
                &["CLASS", "PG", "DATA_NODES"],
                classes.iter().flat_map(|c| {
                    let class = text(c.get("storage_class"));
                    c.get("groups")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |g| {
                            vec![class.clone(), text(g.get("id")), text(g.get("data_nodes"))]
                        })
                }),
            );
            let nodes = datanode_grid(&list("nodes"));
            format!("{head}\n\n{summary}\n\n{groups}\n\n{nodes}")
        }
        Shape::Operator => serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()),
        Shape::Operators => {
            let rows = list("running").into_iter().chain(list("finished"));
            grid(
                &[
                    "REGION",
                    "NAME",
                    "SOURCE",
                    "FROM",
                    "TO",
                    "STARTED",
                    "ELAPSED_MS",
                    "STATUS",
                ],
                rows.map(|o| {
                    cells(
                        &o,
                        &[
                            "/region_id",
                            "/name",
                            "/source",
                            "/from_store_id",
                            "/to_store_id",
                            "/started_ts",
                            "/elapsed_ms",
                            "/status",
                        ],
                    )
                }),
            )
        }
        Shape::Schedulers => {
            let head = format!(
                "interval {} s, at most {} leader transfers per store per minute",
                text(v.get("interval_secs")),
                text(v.get("leader_transfers_per_store_per_minute"))
            );
            let scheds = grid(
                &["SCHEDULER", "PAUSED", "DISABLED"],
                list("schedulers")
                    .iter()
                    .map(|s| cells(s, &["/name", "/paused", "/disabled"])),
            );
            let limits = grid(
                &["STORE", "LEADER_TRANSFERS_LAST_MINUTE", "LIMIT"],
                list("store_limits").iter().map(|s| {
                    cells(
                        s,
                        &[
                            "/store_id",
                            "/leader_transfers_last_minute",
                            "/limit_per_minute",
                        ],
                    )
                }),
            );
            let held = match v.get("held_back_stores").and_then(Value::as_array) {
                Some(a) if !a.is_empty() => format!(
                    "\n\nnot a target for now (lost leaders to elections): stores {}",
                    text(v.get("held_back_stores"))
                ),
                _ => String::new(),
            };
            format!("{head}\n\n{scheds}\n\n{limits}{held}")
        }
        Shape::Limits => grid(
            &["STORE", "OPERATORS_PER_MINUTE", "OWN", "USED_LAST_MINUTE"],
            v.as_object().into_iter().flatten().map(|(id, l)| {
                let mut row = vec![id.clone()];
                row.extend(cells(
                    l,
                    &["/operators-per-minute", "/own", "/used-last-minute"],
                ));
                row
            }),
        ),
        Shape::Config => grid(
            &["SECTION", "KEY", "VALUE"],
            v.as_object()
                .into_iter()
                .flatten()
                .flat_map(|(section, o)| {
                    o.as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, val)| vec![section.clone(), k.clone(), text(Some(val))])
                        .collect::<Vec<_>>()
                }),
        ),
        Shape::Cancelled => {
            let c = v.get("cancelled").cloned().unwrap_or_default();
            format!(
                "cancelled {} of region {} (from {}): {}",
                text(c.get("name")),
                text(c.get("region_id")),
                text(c.get("source")),
                text(v.get("note"))
            )
        }
        Shape::DataNodes => datanode_grid(&list("datanodes")),
        Shape::DataNode => datanode_grid(std::slice::from_ref(v)),
    }
}

/// `region topread|topwrite` as a table: who leads, and the flow.
fn flow_grid(regions: &[Value]) -> String {
    grid(
        &[
            "ID",
            "LEADER_STORE",
            "PEER_STORES",
            "READ_BYTES/S",
            "READ_KEYS/S",
            "WRITTEN_BYTES/S",
            "WRITTEN_KEYS/S",
        ],
        regions.iter().map(|r| {
            let mut row = cells(r, &["/id", "/leader/store_id"]);
            let peers = r.get("peers").and_then(Value::as_array);
            row.push(
                peers
                    .into_iter()
                    .flatten()
                    .map(|p| text(p.get("store_id")))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            row.extend(cells(
                r,
                &[
                    "/read_bytes",
                    "/read_keys",
                    "/written_bytes",
                    "/written_keys",
                ],
            ));
            row
        }),
    )
}

/// The placement table's repair line: backlog, caught up or not, waiting or not.
fn repair_line(r: &Value) -> String {
    let Some(backlog) = r.get("repair_backlog") else {
        return String::new();
    };
    let caught_up = if r.get("repair_caught_up") == Some(&Value::Bool(true)) {
        "caught up with this version".to_string()
    } else {
        format!(
            "not caught up with this version (data nodes {})",
            text(r.get("repair_lagging_nodes"))
        )
    };
    let waiting = if r.get("waiting_for_repair") == Some(&Value::Bool(true)) {
        format!(
            "; the next step waits for repair of version {} (at most {} s)",
            text(r.get("last_step_version")),
            text(r.get("repair_catch_up_limit_secs"))
        )
    } else {
        String::new()
    };
    format!(
        "\nrepair: backlog {}, {caught_up}{waiting}",
        text(Some(backlog))
    )
}

/// One row per node, then one line per draining node that cannot drain.
fn datanode_grid(nodes: &[Value]) -> String {
    let table = grid(
        &[
            "ID",
            "ADDRESS",
            "STATE",
            "LABELS",
            "READ_ONLY",
            "SLOTS",
            "DRAINING",
            "MOVE_OUT",
            "MOVE_IN",
            "REPAIR_BACKLOG",
            "REPAIR_VERSION",
            "USED",
            "CAPACITY",
            "LAST_HEARTBEAT",
            "UUID",
            "REPLACED_BY",
        ],
        nodes.iter().map(|n| {
            let mut row = cells(n, &["/id", "/address", "/state_name"]);
            row.push(labels_text(n.get("labels")));
            row.extend(cells(
                n,
                &[
                    "/read_only",
                    "/slots",
                    "/draining",
                    "/slots_to_move_out",
                    "/slots_to_move_in",
                    "/repair_backlog",
                    "/repair_map_version",
                    "/used",
                    "/capacity",
                    "/last_heartbeat_ts",
                    "/uuid_prefix",
                    "/replaced_by",
                ],
            ));
            row
        }),
    );
    let blocked: Vec<String> = nodes
        .iter()
        .filter_map(|n| {
            let why = n.get("drain_blocker")?.as_str()?;
            Some(format!(
                "data node {} cannot drain {} slot(s): {why}",
                text(n.get("id")),
                text(n.get("slots_remaining")),
            ))
        })
        .collect();
    if blocked.is_empty() {
        table
    } else {
        format!("{table}\n\n{}", blocked.join("\n"))
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "\"\"".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| text(Some(x)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

fn cells(v: &Value, pointers: &[&str]) -> Vec<String> {
    pointers.iter().map(|p| text(v.pointer(p))).collect()
}

fn labels_text(labels: Option<&Value>) -> String {
    let labels = labels
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let parts: Vec<String> = labels
        .iter()
        .map(|l| format!("{}={}", text(l.get("key")), text(l.get("value"))))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// Left-aligned columns separated by two spaces (also `kura admin --table`'s).
pub fn grid(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn datanode_table_shows_slots_and_why_a_node_cannot_drain() {
        let v = json!({"count": 2, "datanodes": [
            {"id": 1, "address": "a:1", "state_name": "Up", "labels": [], "read_only": false,
             "slots": 40, "slots_to_move_out": 0, "slots_to_move_in": 3, "used": 0,
             "capacity": 0, "last_heartbeat_ts": "t", "repair_backlog": 12,
             "repair_passes": 4, "repair_map_version": 9},
            {"id": 2, "address": "a:2", "state_name": "Offline", "labels": [],
             "read_only": false, "slots": 32, "draining": "decommission",
             "slots_remaining": 32, "slots_to_move_out": 0, "slots_to_move_in": 0,
             "drain_blocker": "EC_4_2: cannot move slots: …", "used": 0, "capacity": 0,
             "last_heartbeat_ts": "t"}]});
        let t = render(Shape::DataNodes, &v, true);
        let lines: Vec<&str> = t.lines().collect();
        let words = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            words(0)[5..9],
            ["SLOTS", "DRAINING", "MOVE_OUT", "MOVE_IN"],
            "{t}"
        );
        assert_eq!(words(1)[5..9], ["40", "-", "0", "3"], "{t}");
        assert_eq!(words(0)[9..11], ["REPAIR_BACKLOG", "REPAIR_VERSION"], "{t}");
        assert_eq!(words(1)[9..11], ["12", "9"], "{t}");
        assert_eq!(words(2)[9..11], ["-", "-"], "no report yet: {t}");
        assert_eq!(words(0)[14..16], ["UUID", "REPLACED_BY"], "{t}");
        assert_eq!(words(1)[14..16], ["-", "-"], "{t}");
        assert_eq!(
            words(2)[2..9],
            ["Offline", "-", "false", "32", "decommission", "0", "0"],
            "{t}"
        );
        assert_eq!(
            lines[4],
            "data node 2 cannot drain 32 slot(s): EC_4_2: cannot move slots: …"
        );
    }

    #[test]
    fn placement_table_says_whether_repair_caught_up_and_steps_wait() {
        let v = json!({"version": 7, "classes": [], "nodes": [], "rebalance": {
            "pending_moves": 5, "slots_moved": 30, "last_step_ts": "t", "max_moves_per_step": 8,
            "interval_secs": 10, "repair_catch_up_limit_secs": 600, "last_step_version": 7,
            "repair_backlog": 12, "repair_caught_up": false, "repair_lagging_nodes": [3, 9],
            "waiting_for_repair": true}});
        let t = render(Shape::Placement, &v, true);
        let line = t.lines().nth(2).unwrap_or_default();
        assert_eq!(
            line,
            "repair: backlog 12, not caught up with this version (data nodes 3,9); \
             the next step waits for repair of version 7 (at most 600 s)",
            "{t}"
        );
        let v = json!({"version": 7, "classes": [], "nodes": [], "rebalance": {
            "repair_backlog": 0, "repair_caught_up": true, "waiting_for_repair": false}});
        let t = render(Shape::Placement, &v, true);
        assert!(
            t.contains("repair: backlog 0, caught up with this version\n"),
            "{t}"
        );
    }

    #[test]
    fn member_table_lists_every_member_and_names_the_leader() {
        let m = |id: u64| {
            json!({"name": format!("pd-{id}"), "member_id": id,
                   "client_urls": [format!("http://h{id}:2379")],
                   "grpc_address": format!("h{id}:2380"), "health": id != 3})
        };
        let v = json!({"members": [m(1), m(2), m(3)], "leader": m(2)});
        let t = render(Shape::Members, &v, true);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(
            lines[3].contains("pd-3") && lines[3].contains("false"),
            "{t}"
        );
        assert_eq!(lines[4], "leader: pd-2");
        let v = json!({"members": [m(1)], "leader": null});
        assert!(render(Shape::Members, &v, true).ends_with("leader: none known yet"));
        assert!(
            !render(Shape::Members, &json!([m(1)]), true).contains("leader"),
            "health lists members only"
        );
    }

    #[test]
    fn store_table_shows_state_and_labels() {
        let v = json!({"count": 1, "stores": [{
            "store": {"id": 1, "address": "127.0.0.1:20160", "state_name": "Up",
                      "labels": [{"key": "zone", "value": "z1"}], "status_address": "",
                      "uuid_prefix": "0a1b2c3d"},
            "status": {"region_count": 1, "leader_count": 0, "capacity": 0, "used": 0,
                       "last_heartbeat_ts": "2026-01-01T00:00:00Z"}}, {
            "store": {"id": 2, "address": "127.0.0.1:20160", "state_name": "Replaced",
                      "labels": [], "status_address": "", "uuid_prefix": "99aa88bb",
                      "replaced_by": 1},
            "status": {"region_count": 0, "leader_count": 0, "capacity": 0, "used": 0,
                       "last_heartbeat_ts": "2026-01-01T00:00:00Z"}}]});
        let t = render(Shape::Stores, &v, true);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID  ADDRESS"));
        assert!(lines[0].contains("UUID") && lines[0].contains("REPLACED_BY"));
        assert!(
            lines[1].contains("127.0.0.1:20160")
                && lines[1].contains("zone=z1")
                && lines[1].contains("Up")
                && lines[1].contains("0a1b2c3d")
        );
        assert!(
            lines[2].contains("Replaced") && lines[2].contains("99aa88bb"),
            "{t}"
        );
    }

    #[test]
    fn placement_table_summarises_classes_then_lists_groups() {
        let v = json!({"version": 2, "classes": [
            {"storage_class": "REPLICA3", "data_shards": 1, "parity_shards": 2, "built": true,
             "groups": [{"id": 0, "data_nodes": [1, 3, 5]}, {"id": 1, "data_nodes": [2, 4, 6]}]},
            {"storage_class": "EC_8_3", "data_shards": 8, "parity_shards": 3, "built": false,
             "blocker": "need at least 11 data nodes, have 6", "groups": []}],
            "nodes": [{"id": 1, "address": "127.0.0.1:30000", "state_name": "Up", "labels": []}]});
        let t = render(Shape::Placement, &v, true);
        let lines: Vec<&str> = t.lines().collect();
        let words = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(lines[0], "placement maps version 2");
        assert_eq!(
            words(2),
            ["CLASS", "K", "M", "BUILT", "PGS", "PENDING", "BLOCKER"],
            "{t}"
        );
        assert_eq!(
            words(3),
            ["REPLICA3", "1", "2", "true", "2", "-", "-"],
            "{t}"
        );
        assert!(
            lines[4].starts_with("EC_8_3")
                && lines[4].ends_with("-        need at least 11 data nodes, have 6"),
            "{t}"
        );
        assert_eq!(words(6), ["CLASS", "PG", "DATA_NODES"], "{t}");
        assert_eq!(words(8), ["REPLICA3", "1", "2,4,6"], "{t}");
        assert!(t.contains("127.0.0.1:30000"));
    }

    #[test]
    fn operator_and_scheduler_tables() {
        let v = json!({"running": [{"region_id": 12, "name": "transfer-leader",
            "source": "balance-leader", "from_store_id": 1, "to_store_id": 2,
            "started_ts": "t0", "elapsed_ms": 40, "status": "running"}],
            "finished": [{"region_id": 9, "name": "transfer-leader", "source": "admin",
            "from_store_id": 2, "to_store_id": 3, "started_ts": "t1", "elapsed_ms": 103,
            "status": "done"}]});
        let t = render(Shape::Operators, &v, true);
        let lines: Vec<&str> = t.lines().collect();
        let words = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(words(0)[..3], ["REGION", "NAME", "SOURCE"], "{t}");
        assert_eq!(
            words(1),
            [
                "12",
                "transfer-leader",
                "balance-leader",
                "1",
                "2",
                "t0",
                "40",
                "running"
            ]
        );
        assert_eq!(words(2)[2..], ["admin", "2", "3", "t1", "103", "done"]);
        let v = json!({"interval_secs": 3, "leader_transfers_per_store_per_minute": 120,
            "schedulers": [{"name": "balance-leader", "paused": true}],
            "store_limits": [{"store_id": 4, "leader_transfers_last_minute": 7}],
            "held_back_stores": [5]});
        let t = render(Shape::Schedulers, &v, true);
        assert!(
            t.starts_with("interval 3 s, at most 120 leader transfers"),
            "{t}"
        );
        assert!(t.contains("balance-leader  true"), "{t}");
        assert!(t.contains("4      7"), "{t}");
        assert!(t.ends_with("(lost leaders to elections): stores 5"), "{t}");
    }

    #[test]
    fn region_table_lists_peer_stores_and_leader() {
        let v = json!({"id": 2, "start_key": "", "end_key": "", "epoch": {"conf_ver": 1, "version": 1},
            "peers": [{"id": 3, "store_id": 1}, {"id": 4, "store_id": 5}],
            "leader": {"id": 4, "store_id": 5}, "approximate_keys": 0, "approximate_size": 0});
        let t = render(Shape::Region, &v, true);
        assert!(t.lines().nth(1).unwrap().contains("1,5"), "{t}");
        assert!(render(Shape::Region, &v, false).contains("\"conf_ver\": 1"));
    }
}
