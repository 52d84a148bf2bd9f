//! Workers and the grid: `GET /v1/workers`, `POST /v1/workers/{id}/release` (admin),
//! `GET /v1/stats` (public).

use super::Routes;
use crate::api::{ApiError, ApiResult, AppState, Authed, Path, blocking};
use crate::app::App;
use crate::grid::Live;
use axum::extract::State;
use axum::http::Method;
use runegrid_core::TrustRecord;
use runegrid_proto::{ErrorBody, GridStats, WorkerInfo};
use runegrid_store::{Account, StoreError, WorkerRecord};

pub fn routes() -> Routes {
    Routes::new()
        .add(Method::GET, "/v1/workers", workers)
        .add(Method::POST, "/v1/workers/{id}/release", release_worker)
        .add(Method::GET, "/v1/stats", stats)
}

/// Workers online by kind, load, totals and recent history (no token needed).
#[utoipa::path(get, path = "/v1/stats", tag = "grid", responses((status = 200, body = GridStats)))]
pub async fn stats(State(app): State<AppState>) -> axum::Json<GridStats> {
    axum::Json(app.stats())
}

/// The caller's workers (an admin's: all of them), connected or not, with their trust.
#[utoipa::path(get, path = "/v1/workers", tag = "grid", security(("token" = [])),
    responses((status = 200, body = Vec<WorkerInfo>)))]
pub async fn workers(State(app): State<AppState>, Authed(a): Authed) -> ApiResult<Vec<WorkerInfo>> {
    let (records, accounts) = blocking(&app, |app| {
        app.read(|s| Ok::<_, StoreError>((s.workers()?, s.accounts()?)))
    })
    .await?;
    let connected = app.connected();
    let out = records
        .into_iter()
        .filter(|w| a.admin || w.owner == a.id)
        .map(|w| {
            let live = connected.get(&w.id).cloned();
            let trust = app.trust_of(w.id).unwrap_or_else(|| w.trust.clone());
            worker_info(&app, w, &accounts, live, trust)
        })
        .collect();
    Ok(axum::Json(out))
}

/// Lifts a quarantine (admin only); the worker starts over as new, its results replicated
/// until it earns trust again.
#[utoipa::path(post, path = "/v1/workers/{id}/release", tag = "grid", security(("token" = [])),
    params(("id" = i64, Path, description = "worker id")),
    responses((status = 200, body = WorkerInfo),
        (status = 403, description = "forbidden: not an admin", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn release_worker(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(id): Path<i64>,
) -> ApiResult<WorkerInfo> {
    if !a.admin {
        return Err(ApiError::forbidden(
            "only an administrator can lift a quarantine",
        ));
    }
    let (records, accounts) = blocking(&app, |app| {
        app.read(|s| Ok::<_, StoreError>((s.workers()?, s.accounts()?)))
    })
    .await?;
    let w = records
        .into_iter()
        .find(|w| w.id == id)
        .ok_or_else(|| ApiError::not_found(format!("worker {id}")))?;
    let trust = app.release(w.id, w.owner, w.trust.clone());
    tracing::info!(worker = id, admin = %a.name, "quarantine lifted");
    let live = app.connected().remove(&w.id);
    Ok(axum::Json(worker_info(&app, w, &accounts, live, trust)))
}

/// What `GET /v1/workers` shows of a worker: its record, its live state when connected (the
/// blobs in its capabilities are the ones it holds now), its trust.
fn worker_info(
    app: &App,
    w: WorkerRecord,
    accounts: &[Account],
    live: Option<Live>,
    trust: TrustRecord,
) -> WorkerInfo {
    let mut capabilities = w.capabilities;
    if let (Some(l), Some(caps)) = (&live, capabilities.as_object_mut()) {
        caps.insert("blobs".into(), serde_json::json!(l.blobs));
    }
    WorkerInfo {
        id: w.id,
        name: w.name,
        public_key: w.public_key,
        owner: accounts
            .iter()
            .find(|x| x.id == w.owner)
            .map(|x| x.name.clone())
            .unwrap_or_default(),
        connected: live.is_some(),
        slots: live.as_ref().map_or(0, |l| l.slots),
        running: live.as_ref().map_or(0, |l| l.running),
        completed: w.completed,
        capabilities,
        last_seen: w.last_seen,
        standing: trust.standing(&app.trust_params()),
        score: trust.score(),
        agreed: trust.agreed,
        disagreed: trust.disagreed,
        abandoned: trust.abandoned,
        accepted_alone: trust.accepted_alone,
        speed: trust.speed,
        quarantine: trust.quarantine,
    }
}
