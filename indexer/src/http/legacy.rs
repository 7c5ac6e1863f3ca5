//! UBackup's dashboard routes, with the JSON shapes its Chrome extension, its alert page and
//! its scripts read (compat §A.5, §A.6; checked against lustlost/ubackup's
//! `dashboard/myapp/views/front.py` and `alert.py` and the Flask-Restless `business` API).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{FocusWriter, LegacyReader};
use super::error::ApiError;
use super::AppState;
use crate::alerts::{LEGACY_RULES, NO_IDENTITY};
use crate::catalog::{AlertFilter, InstanceKey, InstanceState, Page};

/// The 480 newest, as UBackup's ES query.
const BACKUP_LIST_SIZE: i64 = 480;

async fn business_names(s: &AppState) -> Result<HashMap<i64, String>, ApiError> {
    Ok(s.catalog
        .businesses()
        .await?
        .into_iter()
        .map(|b| (b.business_id, b.name))
        .collect())
}

/// `GET /api/alert`: open script-error, overdue and illegal alerts, each with the fields
/// UBackup's alert page reads: `server_id`, `game_server_ip`, `type`, `instance`, `game_id`,
/// `game_name`, `instance_name`, `create_time` (ms) and `log`.
pub async fn alert(State(s): State<AppState>, _r: LegacyReader) -> Result<Json<Value>, ApiError> {
    let names = business_names(&s).await?;
    let registry: HashMap<InstanceKey, String> = s
        .catalog
        .instances()
        .await?
        .into_iter()
        .map(|i| (i.key, i.name))
        .collect();
    let states: HashMap<InstanceKey, InstanceState> = s
        .catalog
        .instance_states()
        .await?
        .into_iter()
        .map(|st| (st.key.clone(), st))
        .collect();
    let open = s
        .catalog
        .alerts(&AlertFilter {
            open: true,
            limit: Some(100_000),
            ..AlertFilter::default()
        })
        .await?;
    let mut out = Vec::new();
    for a in open
        .into_iter()
        .filter(|a| LEGACY_RULES.contains(&a.rule.as_str()))
    {
        let key = match (&a.server_id, &a.back_type, a.instance) {
            (Some(sid), Some(t), Some(i)) => Some(InstanceKey::new(sid, t, i)),
            _ => None,
        };
        if key.is_none() && a.subject == NO_IDENTITY {
            // A message without identity: what the node kept of it, not empty fields.
            let st = states.get(&InstanceKey::new("", "", 0));
            out.push(json!({
                "server_id": NO_IDENTITY,
                "game_server_ip": a.game_server_ip,
                "type": null,
                "instance": null,
                "game_id": a.game_id,
                "game_name": "unknow",
                "instance_name": null,
                "create_time": st.map(|st| st.last_ms).filter(|t| *t > 0).unwrap_or(a.opened_ms),
                "log": a.message,
                "alert_type": a.rule,
                "queue": st.and_then(|st| st.last_queue.clone()),
                "node_id": st.and_then(|st| st.last_node.clone()),
                "raw": st.and_then(|st| st.last_raw.clone()),
            }));
            continue;
        }
        let state = key
            .as_ref()
            .and_then(|k| states.get(k))
            .map(|st| (st.last_ms, st.last_log.clone()));
        let state = state.as_ref();
        out.push(json!({
            "server_id": a.server_id,
            "game_server_ip": a.game_server_ip,
            "type": a.back_type,
            "instance": a.instance,
            "game_id": a.game_id,
            "game_name": a.game_id.and_then(|g| names.get(&g).cloned()).unwrap_or_else(|| "unknow".into()),
            "instance_name": key.as_ref().and_then(|k| registry.get(k).cloned()).filter(|n| !n.is_empty()),
            "create_time": state.map(|st| st.0).filter(|t| *t > 0).unwrap_or(a.opened_ms),
            "log": if a.rule == "script_error" { state.map(|st| st.1.clone()).unwrap_or(a.message.clone()) } else { a.message.clone() },
            "alert_type": a.rule,
        }));
    }
    Ok(Json(Value::Array(out)))
}

/// `GET /api/get_force_business`: the focus businesses of the token's or the logged-in
/// dashboard user, a JSON list (empty for an anonymous reader). UBackup's extension counts
/// the open alerts of these businesses on its badge.
pub async fn get_force_business(r: LegacyReader) -> Result<Json<Value>, ApiError> {
    let list =
        r.0.and_then(|u| serde_json::from_str::<Value>(&u.focus_business).ok())
            .filter(|v| v.is_array())
            .unwrap_or_else(|| json!([]));
    Ok(Json(list))
}

/// `POST /api/set_force_business` with `{"force_business": [...]}`: answers
/// `{"state": true, "data": ""}`, or `{"state": false, "data": <why>}` as UBackup did. Who may
/// call it, and how on a session cookie: [`FocusWriter`].
pub async fn set_force_business(
    State(s): State<AppState>,
    FocusWriter(u): FocusWriter,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let parsed: Result<Vec<i64>, String> = serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| {
            serde_json::from_value(v.get("force_business").cloned().unwrap_or(Value::Null))
                .map_err(|e| format!("force_business: {e}"))
        });
    match parsed {
        Ok(list) => {
            let text = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
            s.catalog.set_focus(u.id, &text).await?;
            Ok(Json(json!({"state": true, "data": ""})))
        }
        Err(e) => Ok(Json(json!({"state": false, "data": e}))),
    }
}

/// `GET /api/get_backup_list` parameters.
#[derive(Debug, Deserialize)]
pub struct BackupListQuery {
    server_id: String,
    #[serde(rename = "type")]
    back_type: String,
    instance: String,
}

/// `GET /api/get_backup_list?server_id=&type=&instance=`: the 480 newest results of the
/// instance, newest first, each with the fields UBackup indexed (`last_all_filename` is
/// `"None"` when there is none) plus `game_name`.
pub async fn get_backup_list(
    State(s): State<AppState>,
    _r: LegacyReader,
    Query(q): Query<BackupListQuery>,
) -> Result<Json<Value>, ApiError> {
    let instance: i64 = q.instance.trim().parse().map_err(|_| {
        ApiError::BadRequest(format!("instance {:?} is not an integer", q.instance))
    })?;
    let names = business_names(&s).await?;
    let rows = s
        .catalog
        .history(
            &InstanceKey::new(&q.server_id, &q.back_type, instance),
            Page {
                offset: 0,
                limit: BACKUP_LIST_SIZE,
            },
        )
        .await?;
    let docs: Vec<Value> = rows
        .into_iter()
        .map(|b| {
            let r = b.record;
            json!({
                "interval": r.interval_secs,
                "server_id": r.server_id,
                "game_id": r.game_id,
                "op_id": r.op_id,
                "game_server_ip": r.game_server_ip,
                "instance": r.instance,
                "back_server_ip": r.back_server_ip,
                "file_path": r.file_path,
                "filename": r.filename,
                "create_time": r.create_time,
                "rsync_time": r.rsync_time,
                "size": r.size,
                "last_all_filename": r.last_all_filename.unwrap_or_else(|| "None".into()),
                "last_all_time": r.last_all_time,
                "succeed": i64::from(r.succeed),
                "log": r.log,
                "type": r.back_type,
                "game_name": r.game_id.and_then(|g| names.get(&g).cloned()).unwrap_or_else(|| "unknow".into()),
            })
        })
        .collect();
    Ok(Json(Value::Array(docs)))
}

/// Flask-Restless paging parameters.
#[derive(Debug, Deserialize)]
pub struct RestlessQuery {
    results_per_page: Option<i64>,
    page: Option<i64>,
}

/// `GET /api/business?results_per_page=N`: Flask-Restless's envelope
/// `{"num_results", "objects": [{"id", "business_id", "name"}], "page", "total_pages"}`.
/// `id` is the business id: UBackup's pages read only `business_id`, and scripts written
/// against this route since have seen `id` equal to it (the old MySQL row id, which
/// `registry import` keeps for resolving `backup_instance`, is not used here).
pub async fn business(
    State(s): State<AppState>,
    _r: LegacyReader,
    Query(q): Query<RestlessQuery>,
) -> Result<Json<Value>, ApiError> {
    let all = s.catalog.businesses().await?;
    let n = all.len() as i64;
    let per = q
        .results_per_page
        .unwrap_or(10)
        .clamp(1, 1_000_000_000_000_000);
    let page = q.page.unwrap_or(1).max(1);
    let total_pages = if n == 0 { 0 } else { (n + per - 1) / per };
    let start = ((page - 1).saturating_mul(per)).min(n) as usize;
    let end = (start as i64).saturating_add(per).min(n) as usize;
    let objects: Vec<Value> = all[start..end]
        .iter()
        .map(|b| json!({"id": b.business_id, "business_id": b.business_id, "name": b.name}))
        .collect();
    Ok(Json(json!({
        "num_results": n,
        "objects": objects,
        "page": page,
        "total_pages": total_pages,
    })))
}
