//! The admin API of PD's persisted settings (docs/pd-http-api.md), pd-ctl's
//! paths and bodies: store labels, weights and operator limits, and the
//! runtime schedule config. Every change is saved (replicated) before the
//! answer and takes effect at the next scheduling round.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value};

use crate::config::{parse_labels, RuntimeConfig};
use crate::http::{error, error_status, json};
use crate::server::{now_ms, PdCore};
use crate::Error;

type Core = State<Arc<PdCore>>;

fn body_object(body: &Bytes) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("invalid JSON body: {e}")),
    }
}

/// The store id in the path and the JSON object in the body of a
/// per-store settings request.
fn store_and_body(raw_id: &str, body: &Bytes) -> Result<(u64, Map<String, Value>), String> {
    let id = raw_id
        .parse()
        .map_err(|_| format!("invalid store id {raw_id:?}"))?;
    Ok((id, body_object(body)?))
}

/// A JSON value as the text `config set` / `store label` take.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Answers with store `id` as `GET /store/{id}` does.
async fn answer_store(core: Arc<PdCore>, id: u64) -> Response {
    crate::schedule::coordinator::sync_settings(&core).await;
    crate::http::store(State(core), Path(id.to_string())).await
}

/// `POST /pd/api/v1/store/{id}/label` with `{"KEY": "VALUE", ...}`
/// (pd-ctl's body): merged into the store's label overrides; `""` drops one.
pub async fn set_labels(State(core): Core, Path(id): Path<String>, body: Bytes) -> Response {
    let (id, obj) = match store_and_body(&id, &body) {
        Ok(x) => x,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let args: Vec<String> = obj
        .iter()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    let labels = match parse_labels(&args) {
        Ok(l) => l,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let res = core
        .update_cluster(|c| {
            let changed = c.set_store_labels(id, &labels)?;
            Ok((changed, changed))
        })
        .await;
    match res {
        Ok(changed) => {
            if changed {
                tracing::info!(store_id = id, ?labels, "store labels set");
            }
            answer_store(core, id).await
        }
        Err(e) => error(error_status(&e), e.to_string()),
    }
}

/// `POST /pd/api/v1/store/{id}/weight` with `{"leader": W, "region": W}`.
pub async fn set_weight(State(core): Core, Path(id): Path<String>, body: Bytes) -> Response {
    let (id, obj) = match store_and_body(&id, &body) {
        Ok(x) => x,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let weight = |k: &str| obj.get(k).and_then(Value::as_f64);
    let (Some(leader), Some(region)) = (weight("leader"), weight("region")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body needs numbers \"leader\" and \"region\"".into(),
        );
    };
    let res = core
        .update_cluster(|c| {
            let changed = c.set_store_weight(id, leader, region)?;
            Ok((changed, changed))
        })
        .await;
    match res {
        Ok(changed) => {
            if changed {
                tracing::info!(store_id = id, leader, region, "store weight set");
            }
            answer_store(core, id).await
        }
        Err(e) => error(error_status(&e), e.to_string()),
    }
}

/// `GET /pd/api/v1/stores/limit`: `{"ID": {"operators-per-minute", "own",
/// "used-last-minute"}}` for every store that is not a tombstone.
pub async fn limits(State(core): Core) -> Response {
    crate::schedule::coordinator::sync_settings(&core).await;
    let (stores, own): (Vec<u64>, Vec<u64>) = core
        .read(|c| {
            let stores = c
                .stores()
                .filter(|s| s.meta.state() != kura_proto::pd::store::State::Tombstone)
                .map(|s| s.meta.id)
                .collect();
            let own = c
                .settings
                .stores
                .iter()
                .filter(|(_, s)| s.limit_per_minute.is_some())
                .map(|(id, _)| *id)
                .collect();
            (stores, own)
        })
        .await;
    let out: BTreeMap<String, Value> = core
        .schedule
        .limits(&stores, now_ms())
        .into_iter()
        .map(|(id, limit, used)| {
            (
                id.to_string(),
                serde_json::json!({
                    "operators-per-minute": limit,
                    "own": own.contains(&id),
                    "used-last-minute": used,
                }),
            )
        })
        .collect();
    json(StatusCode::OK, &out)
}

/// `POST /pd/api/v1/store/{id}/limit` with `{"rate": N}`: store `id` may
/// take part in N operators per minute (its own limit, persisted).
pub async fn set_limit(State(core): Core, Path(id): Path<String>, body: Bytes) -> Response {
    let (id, obj) = match store_and_body(&id, &body) {
        Ok(x) => x,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let Some(rate) = obj.get("rate").and_then(Value::as_u64) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body needs a whole number \"rate\" (operators per minute)".into(),
        );
    };
    let res = core
        .update_cluster(|c| {
            let changed = c.set_store_limit(id, rate as usize)?;
            Ok((changed, changed))
        })
        .await;
    match res {
        Ok(changed) => {
            if changed {
                tracing::info!(store_id = id, rate, "store limit set");
            }
            limits(State(core)).await
        }
        Err(e) => error(error_status(&e), e.to_string()),
    }
}

/// `GET /pd/api/v1/config`: the schedule settings in effect.
pub async fn show_config(State(core): Core) -> Response {
    json(StatusCode::OK, &core.runtime().to_json())
}

/// `POST /pd/api/v1/config` with `{"KEY": VALUE, ...}` (pd-ctl's body):
/// every key is checked first; all are saved or none.
pub async fn set_config(State(core): Core, body: Bytes) -> Response {
    let obj = match body_object(&body) {
        Ok(o) => o,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    if obj.is_empty() {
        return error(StatusCode::BAD_REQUEST, "no key given".into());
    }
    let res = core
        .update_cluster(|c| {
            let mut rc = RuntimeConfig::effective(core.config(), &c.settings.config);
            let mut changed = false;
            for (k, v) in &obj {
                let normal = rc.set(k, &text(v)).map_err(Error::InvalidArgument)?;
                let old = c.settings.config.insert(k.clone(), normal.clone());
                changed |= old.as_deref() != Some(normal.as_str());
            }
            Ok(((), changed))
        })
        .await;
    match res {
        Ok(()) => {
            tracing::info!(keys = ?obj.keys().collect::<Vec<_>>(), "config set");
            crate::schedule::coordinator::sync_settings(&core).await;
            show_config(State(core)).await
        }
        Err(e) => error(error_status(&e), e.to_string()),
    }
}
