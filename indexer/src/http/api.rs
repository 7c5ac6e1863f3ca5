//! The JSON API handlers.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Admin, Operator, Viewer};
use super::error::ApiError;
use super::AppState;
use crate::auth::LoginOutcome;
use crate::catalog::{AlertFilter, BackupType, Business, Instance, InstanceKey, Page, StatsBy};
use crate::web::session::PeerAddr;

type ApiResult = Result<Json<Value>, ApiError>;

fn to_json<T: serde::Serialize>(v: T) -> ApiResult {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn key_of(p: (String, String, i64)) -> InstanceKey {
    InstanceKey::new(&p.0, &p.1, p.2)
}

async fn record(s: &AppState, user: &str, action: &str, detail: Value) -> Result<(), ApiError> {
    s.catalog
        .audit(s.clock.now_ms(), user, action, &detail.to_string())
        .await?;
    Ok(())
}

/// `POST /api/v1/login` body.
#[derive(Debug, Deserialize)]
pub struct Login {
    name: String,
    password: String,
    /// Token lifetime (s): at most, and by default, `login.login_token_secs`.
    expires_in_secs: Option<u64>,
}

/// Exchanges a name and password for a new short-lived bearer token (`expires_ms`, named
/// "API login from ADDRESS" in the token list). Limits, hashing and timing are the web
/// login's ([`crate::auth::LoginGuard`]).
pub async fn login(
    State(s): State<AppState>,
    PeerAddr(peer): PeerAddr,
    Json(l): Json<Login>,
) -> ApiResult {
    use crate::web::login::{MAX_LOGIN_NAME_BYTES, MAX_LOGIN_PASSWORD_BYTES};
    if l.name.len() > MAX_LOGIN_NAME_BYTES || l.password.len() > MAX_LOGIN_PASSWORD_BYTES {
        return Err(ApiError::BadRequest("name or password too long".into()));
    }
    let wall = crate::web::session::wall_ms();
    let outcome = s
        .login
        .verify(
            &*s.catalog,
            &l.name,
            &l.password,
            peer.map(|p| p.ip()),
            wall,
        )
        .await?;
    let user = match outcome {
        LoginOutcome::Verified(u) => u,
        LoginOutcome::Wrong => {
            let _ = record(&s, &l.name, "login_failed", json!({})).await;
            return Err(ApiError::Unauthenticated);
        }
        LoginOutcome::Limited { retry_after_secs } => {
            return Err(ApiError::RateLimited(retry_after_secs))
        }
        LoginOutcome::Busy { retry_after_secs } => return Err(ApiError::Busy(retry_after_secs)),
    };
    let token = crate::auth::new_token();
    let now = s.clock.now_ms();
    let expires = s.login.login_token_expiry(now, l.expires_in_secs);
    let name = match peer {
        Some(p) => format!("API login from {}", p.ip()),
        None => "API login".to_string(),
    };
    s.catalog
        .add_named_token(
            user.id,
            &name,
            &crate::auth::token_hash(&token),
            now,
            expires,
        )
        .await?;
    record(&s, &user.name, "login", json!({"expires_ms": expires})).await?;
    Ok(Json(
        json!({"token": token, "user": user.name, "role": user.role, "expires_ms": expires}),
    ))
}

/// The registry.
pub async fn instances(State(s): State<AppState>, _v: Viewer) -> ApiResult {
    let states = crate::alerts::instance_states(s.catalog.as_ref()).await?;
    let mut out = Vec::new();
    for i in s.catalog.instances().await? {
        let state = states.of(&i);
        let mut v = serde_json::to_value(i).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if let Value::Object(o) = &mut v {
            o.insert("state".into(), Value::from(state.name()));
        }
        out.push(v);
    }
    Ok(Json(Value::Array(out)))
}

/// Adds or updates registry rows (one object or a list).
pub async fn put_instances(
    State(s): State<AppState>,
    Operator(u): Operator,
    Json(body): Json<Value>,
) -> ApiResult {
    let rows: Vec<Instance> = match body {
        Value::Array(_) => serde_json::from_value(body),
        other => serde_json::from_value(other).map(|i| vec![i]),
    }
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let rows = rows
        .into_iter()
        .map(crate::validate::instance)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let n = s.catalog.upsert_instances(&rows, s.clock.now_ms()).await?;
    record(&s, &u.name, "registry.put", json!({"count": rows.len()})).await?;
    Ok(Json(json!({"written": n})))
}

/// Removes a registry row.
pub async fn delete_instance(
    State(s): State<AppState>,
    Operator(u): Operator,
    Path(p): Path<(String, String, i64)>,
) -> ApiResult {
    let key = key_of(p);
    if !s.catalog.delete_instance(&key).await? {
        return Err(ApiError::NotFound);
    }
    record(&s, &u.name, "registry.delete", json!({"instance": key})).await?;
    Ok(Json(json!({"deleted": key})))
}

/// Paging parameters.
#[derive(Debug, Deserialize)]
pub struct Paging {
    page: Option<i64>,
    per_page: Option<i64>,
}

/// An instance's backups, newest first.
pub async fn history(
    State(s): State<AppState>,
    _v: Viewer,
    Path(p): Path<(String, String, i64)>,
    Query(q): Query<Paging>,
) -> ApiResult {
    let per_page = q.per_page.unwrap_or(50).clamp(1, 1000);
    let page = q.page.unwrap_or(1).max(1);
    let key = key_of(p);
    let rows = s
        .catalog
        .history(
            &key,
            Page {
                offset: (page - 1).saturating_mul(per_page),
                limit: per_page,
            },
        )
        .await?;
    Ok(Json(
        json!({"instance": key, "page": page, "per_page": per_page, "backups": rows}),
    ))
}

/// `at_ms` of a restore plan.
#[derive(Debug, Deserialize)]
pub struct At {
    at_ms: Option<i64>,
}

/// The restore plan of an instance at a time (default: now).
pub async fn restore_plan(
    State(s): State<AppState>,
    _v: Viewer,
    Path(p): Path<(String, String, i64)>,
    Query(q): Query<At>,
) -> ApiResult {
    let at = q.at_ms.unwrap_or_else(|| s.clock.now_ms());
    to_json(crate::restore::plan(&*s.catalog, &key_of(p), at).await?)
}

/// One backup with its chain.
pub async fn backup(State(s): State<AppState>, _v: Viewer, Path(id): Path<i64>) -> ApiResult {
    let b = s.catalog.backup(id).await?.ok_or(ApiError::NotFound)?;
    let chain = crate::restore::plan(&*s.catalog, &b.record.key(), b.record.create_time).await?;
    Ok(Json(json!({"backup": b, "chain": chain})))
}

/// Businesses.
pub async fn businesses(State(s): State<AppState>, _v: Viewer) -> ApiResult {
    to_json(s.catalog.businesses().await?)
}

/// Adds or renames businesses.
pub async fn put_businesses(
    State(s): State<AppState>,
    Operator(u): Operator,
    Json(rows): Json<Vec<Business>>,
) -> ApiResult {
    let rows = rows
        .into_iter()
        .map(crate::validate::business)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let n = s.catalog.upsert_businesses(&rows).await?;
    record(&s, &u.name, "business.put", json!({"count": rows.len()})).await?;
    Ok(Json(json!({"written": n})))
}

/// Backup types.
pub async fn backup_types(State(s): State<AppState>, _v: Viewer) -> ApiResult {
    to_json(s.catalog.backup_types().await?)
}

/// Adds or renames backup types.
pub async fn put_backup_types(
    State(s): State<AppState>,
    Operator(u): Operator,
    Json(rows): Json<Vec<BackupType>>,
) -> ApiResult {
    let rows = rows
        .into_iter()
        .map(crate::validate::backup_type)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let n = s.catalog.upsert_backup_types(&rows).await?;
    record(&s, &u.name, "backup_type.put", json!({"count": rows.len()})).await?;
    Ok(Json(json!({"written": n})))
}

/// Statistics query.
#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    by: Option<StatsBy>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
}

/// Statistics per day, business, type or node (default: per day over the last 7 days).
pub async fn stats(
    State(s): State<AppState>,
    _v: Viewer,
    Query(q): Query<StatsQuery>,
) -> ApiResult {
    let now = s.clock.now_ms();
    let by = q.by.unwrap_or(StatsBy::Day);
    let to = q.to_ms.unwrap_or(now + 1);
    let from = q.from_ms.unwrap_or(to.saturating_sub(7 * 86_400_000));
    let (from, to) = crate::validate::stats_range_ms(from, to)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    to_json(json!({"by": by_name(by), "from_ms": from, "to_ms": to,
        "rows": s.catalog.stats(by, from, to).await?}))
}

fn by_name(b: StatsBy) -> &'static str {
    match b {
        StatsBy::Day => "day",
        StatsBy::Business => "business",
        StatsBy::Type => "type",
        StatsBy::Node => "node",
    }
}

/// Clusters and nodes, read live from each cluster's Redis.
pub async fn clusters(State(s): State<AppState>, _v: Viewer) -> ApiResult {
    to_json(s.clusters.status().await)
}

/// Alerts, filtered (`open`, `rule`, `business`, `limit`).
pub async fn alerts(
    State(s): State<AppState>,
    _v: Viewer,
    Query(f): Query<AlertFilter>,
) -> ApiResult {
    to_json(s.catalog.alerts(&f).await?)
}

/// Acknowledges an alert.
pub async fn ack(
    State(s): State<AppState>,
    Operator(u): Operator,
    Path(id): Path<i64>,
) -> ApiResult {
    if !s.catalog.ack_alert(id, &u.name, s.clock.now_ms()).await? {
        return Err(ApiError::NotFound);
    }
    record(&s, &u.name, "alert.ack", json!({"id": id})).await?;
    Ok(Json(json!({"acked": id, "by": u.name})))
}

/// How long to silence.
#[derive(Debug, Deserialize)]
pub struct Silence {
    until_ms: Option<i64>,
    for_secs: Option<i64>,
}

/// Silences an alert: it stays open, but sends no notifications until then.
pub async fn silence(
    State(s): State<AppState>,
    Operator(u): Operator,
    Path(id): Path<i64>,
    Json(b): Json<Silence>,
) -> ApiResult {
    let now = s.clock.now_ms();
    let until = match (b.until_ms, b.for_secs) {
        (Some(t), _) => t,
        (None, Some(secs)) if secs > 0 => now.saturating_add(secs.saturating_mul(1000)),
        _ => {
            return Err(ApiError::BadRequest(
                "give until_ms or a positive for_secs".into(),
            ))
        }
    };
    let until = crate::validate::silence_until(now, until)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if !s.catalog.silence_alert(id, until, &u.name).await? {
        return Err(ApiError::NotFound);
    }
    record(
        &s,
        &u.name,
        "alert.silence",
        json!({"id": id, "until_ms": until}),
    )
    .await?;
    Ok(Json(json!({"silenced": id, "until_ms": until})))
}

/// The newest audit-log entries (admins).
pub async fn audit(State(s): State<AppState>, _a: Admin) -> ApiResult {
    to_json(s.catalog.audit_log(500).await?)
}

/// Prometheus metrics.
pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
