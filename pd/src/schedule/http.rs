//! Scheduling's admin API (docs/pd-http-api.md): `transfer-leader` through
//! `POST /pd/api/v1/operators`, `GET /pd/api/v1/operators` (running and
//! recently finished operators), `GET /pd/api/v1/schedulers` and
//! `POST /pd/api/v1/schedulers/{name}/{pause|resume}`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::coordinator::{run_registered, OperatorRecord};
use super::{Operator, OperatorKind, ADMIN, TRANSFER_LEADER};
use crate::http::ErrorJson;
use crate::operator::{OperatorError, OperatorRequest};
use crate::server::{now_ms, PdCore};

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn error(e: &OperatorError) -> Response {
    json(
        e.http_status(),
        &ErrorJson {
            error: e.to_string(),
        },
    )
}

#[derive(Serialize)]
pub struct PeerJson {
    pub id: u64,
    pub store_id: u64,
}

#[derive(Serialize)]
pub struct TransferJson {
    pub name: &'static str,
    pub region_id: u64,
    pub from_store_id: u64,
    pub to_store_id: u64,
    pub leader: Option<PeerJson>,
    pub took_ms: u64,
}

/// `POST /pd/api/v1/operators` with `{"name":"transfer-leader",
/// "region_id":R,"to_store_id":S}`: answers once PD sees the new leader.
pub async fn add_transfer_leader(core: &PdCore, req: &OperatorRequest) -> Response {
    if req.region_id == 0 || req.to_store_id == 0 {
        return error(&OperatorError::Invalid(
            "transfer-leader needs region_id and to_store_id".into(),
        ));
    }
    let t0 = Instant::now();
    let info = match super::transfer::check_target(core, req.region_id, req.to_store_id).await {
        Ok(i) => i,
        Err(e) => return error(&e),
    };
    let op = Operator {
        region_id: req.region_id,
        kind: OperatorKind::TransferLeader {
            from_store: info.leader.map_or(0, |l| l.store_id),
            to_store: req.to_store_id,
        },
        source: ADMIN,
    };
    if let Err(e) = core.schedule.begin(&op, now_ms()) {
        return error(&e);
    }
    tracing::info!(region_id = op.region_id, op = ?op.kind, "admin operator");
    match run_registered(core, &op).await {
        Ok(done) => json(
            StatusCode::OK,
            &TransferJson {
                name: TRANSFER_LEADER,
                region_id: req.region_id,
                from_store_id: info.leader.map_or(0, |l| l.store_id),
                to_store_id: req.to_store_id,
                leader: done.leader.map(|l| PeerJson {
                    id: l.id,
                    store_id: l.store_id,
                }),
                took_ms: t0.elapsed().as_millis() as u64,
            },
        ),
        Err(e) => error(&e),
    }
}

#[derive(Serialize)]
pub struct OperatorJson {
    pub region_id: u64,
    pub name: &'static str,
    /// The scheduler that made it, or "admin".
    pub source: &'static str,
    pub from_store_id: u64,
    pub to_store_id: u64,
    pub started_ts: String,
    /// Running: time so far; finished: how long it took.
    pub elapsed_ms: i64,
    /// "running", "done" or the error.
    pub status: String,
}

#[derive(Serialize)]
pub struct OperatorsJson {
    pub running: Vec<OperatorJson>,
    /// The last finished operators, oldest first.
    pub finished: Vec<OperatorJson>,
}

fn operator_json(r: &OperatorRecord, now: i64) -> OperatorJson {
    let (from_store, to_store) = r.op.kind.from_to();
    OperatorJson {
        region_id: r.op.region_id,
        name: r.op.kind.name(),
        source: r.op.source,
        from_store_id: from_store,
        to_store_id: to_store,
        started_ts: crate::http::timestamp(r.started_ms),
        elapsed_ms: r.finished_ms.unwrap_or(now) - r.started_ms,
        status: r.outcome.clone().unwrap_or_else(|| "running".into()),
    }
}

/// `GET /pd/api/v1/operators`.
pub async fn list_operators(State(core): State<Arc<PdCore>>) -> Response {
    let now = now_ms();
    let (running, finished) = core.schedule.operators();
    json(
        StatusCode::OK,
        &OperatorsJson {
            running: running.iter().map(|r| operator_json(r, now)).collect(),
            finished: finished.iter().map(|r| operator_json(r, now)).collect(),
        },
    )
}

#[derive(Serialize)]
pub struct CancelJson {
    pub cancelled: OperatorJson,
    /// What happens now.
    pub note: &'static str,
}

/// `DELETE /pd/api/v1/operators/{region_id}` (pd-ctl's `operator remove`):
/// cancels the region's running operator. A step in flight finishes; the
/// steps after it do not run; `operator show` then lists it as finished
/// with what was done. `404` when the region has no running operator.
pub async fn remove_operator(
    State(core): State<Arc<PdCore>>,
    Path(region_id): Path<String>,
) -> Response {
    let Ok(region_id) = region_id.parse::<u64>() else {
        return error(&OperatorError::Invalid(format!(
            "invalid region id {region_id:?}"
        )));
    };
    match core.schedule.cancel(region_id) {
        Some(rec) => {
            tracing::info!(region_id, op = ?rec.op.kind, source = rec.op.source, "operator cancelled");
            json(
                StatusCode::OK,
                &CancelJson {
                    cancelled: operator_json(&rec, now_ms()),
                    note: "a step in flight finishes; no further step of this operator starts",
                },
            )
        }
        None => error(&OperatorError::NoOperator(region_id)),
    }
}

#[derive(Serialize)]
pub struct SchedulerJson {
    pub name: &'static str,
    pub paused: bool,
    /// `scheduler remove`d (persisted; `scheduler add` enables it again).
    pub disabled: bool,
}

#[derive(Serialize)]
pub struct StoreLimitJson {
    pub store_id: u64,
    /// Leader transfers this store took part in during the last minute.
    pub leader_transfers_last_minute: usize,
    /// Its limit per minute (its own from `store limit`, else the default).
    pub limit_per_minute: usize,
}

#[derive(Serialize)]
pub struct SchedulersJson {
    /// Seconds between rounds; 0: the loop is off.
    pub interval_secs: u64,
    pub leader_transfers_per_store_per_minute: usize,
    pub schedulers: Vec<SchedulerJson>,
    pub store_limits: Vec<StoreLimitJson>,
    /// Stores no scheduler targets for now: they lost region leaderships to
    /// elections in the last 10 s (likely dead or cut off).
    pub held_back_stores: Vec<u64>,
}

/// `GET /pd/api/v1/schedulers`.
pub async fn list_schedulers(State(core): State<Arc<PdCore>>) -> Response {
    super::coordinator::sync_settings(&core).await;
    let stores: Vec<u64> = core.read(|c| c.stores().map(|s| s.meta.id).collect()).await;
    let rc = core.runtime();
    json(
        StatusCode::OK,
        &SchedulersJson {
            interval_secs: rc.schedule_interval.as_secs(),
            leader_transfers_per_store_per_minute: rc.leader_transfer_limit,
            schedulers: core
                .schedule
                .schedulers()
                .into_iter()
                .map(|(name, paused, disabled)| SchedulerJson {
                    name,
                    paused,
                    disabled,
                })
                .collect(),
            store_limits: core
                .schedule
                .limits(&stores, now_ms())
                .into_iter()
                .map(|(store_id, limit, used)| StoreLimitJson {
                    store_id,
                    leader_transfers_last_minute: used,
                    limit_per_minute: limit,
                })
                .collect(),
            held_back_stores: core.schedule.held_back(now_ms()),
        },
    )
}

/// `POST /pd/api/v1/schedulers/{name}/{pause|resume|add|remove}`: pause
/// (running operators finish) or resume a scheduler, remove (disable) or
/// add (enable) it; persisted, so a restart or a PD leader change keeps it.
pub async fn set_scheduler(
    State(core): State<Arc<PdCore>>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if !["pause", "resume", "add", "remove"].contains(&action.as_str()) {
        return error(&OperatorError::Invalid(format!(
            "unknown action {action:?} (pause, resume, add or remove)"
        )));
    }
    if !core.schedule.knows(&name) {
        let known: Vec<&str> = core.schedule.schedulers().iter().map(|s| s.0).collect();
        return json(
            StatusCode::NOT_FOUND,
            &ErrorJson {
                error: format!("no scheduler {name:?} (known: {})", known.join(", ")),
            },
        );
    }
    let changed = core
        .update_cluster(|c| {
            let s = &mut c.settings;
            let changed = match action.as_str() {
                "pause" => s.paused_schedulers.insert(name.clone()),
                "resume" => s.paused_schedulers.remove(&name),
                "remove" => s.disabled_schedulers.insert(name.clone()),
                _ => s.disabled_schedulers.remove(&name),
            };
            Ok((changed, changed))
        })
        .await;
    match changed {
        Ok(changed) => {
            if changed {
                tracing::info!(scheduler = %name, action = %action, "scheduler state changed");
            }
            list_schedulers(State(core)).await
        }
        Err(e) => json(
            crate::http::error_status(&e),
            &ErrorJson {
                error: e.to_string(),
            },
        ),
    }
}
