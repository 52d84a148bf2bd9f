//! Jobs: submit, list, status, cancel, results (`/v1/jobs…`); their event streams are in
//! `events`.

use super::Routes;
use crate::api::{ApiError, ApiResult, AppState, Authed, Json, Path, Query, blocking, visible};
use crate::grid::{bump, status_of, task_result};
use crate::submit::create_job;
use axum::extract::{DefaultBodyLimit, State};
use axum::handler::Handler as _;
use axum::http::Method;
use runegrid_core::JobId;
use runegrid_proto::{Counts, ErrorBody, JobResults, JobStatus, SubmitJob, SubmitJobResponse};
use runegrid_store::{Account, StoreError};
use serde::Deserialize;
use std::time::Duration;

/// Largest `POST /v1/jobs` body.
const MAX_SUBMISSION_BYTES: usize = 256 << 20;

pub fn routes() -> Routes {
    Routes::new()
        .add(
            Method::POST,
            "/v1/jobs",
            submit_job.layer(DefaultBodyLimit::max(MAX_SUBMISSION_BYTES)),
        )
        .add(Method::GET, "/v1/jobs", list_jobs)
        .add(Method::GET, "/v1/jobs/{id}", job_status)
        .add(Method::DELETE, "/v1/jobs/{id}", cancel_job)
        .add(Method::GET, "/v1/jobs/{id}/results", job_results)
        .add(
            Method::GET,
            "/v1/jobs/{id}/tasks/{index}/files/{*path}",
            task_file,
        )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Wait up to this many seconds (at most 3600) for the job to finish.
    #[serde(default)]
    wait: Option<f64>,
}

/// Submits a job; answered once the job is durable. With `?wait=SECONDS`, also waits for its
/// results.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", security(("token" = [])),
    params(WaitQuery), request_body = SubmitJob,
    responses((status = 200, body = SubmitJobResponse),
        (status = 400, description = "invalid_request, invalid_job, invalid_limits, invalid_policy, invalid_blobs, unknown_blob, unknown_program", body = ErrorBody),
        (status = 402, description = "insufficient_credits: the account cannot cover the job's worst case; nothing was stored", body = ErrorBody),
        (status = 403, description = "forbidden: a contributor account", body = ErrorBody)))]
pub async fn submit_job(
    State(app): State<AppState>,
    Authed(a): Authed,
    Query(q): Query<WaitQuery>,
    Json(req): Json<SubmitJob>,
) -> ApiResult<SubmitJobResponse> {
    let (id, n) = create_job(&app, &a, req).await?;
    let results = match q.wait.filter(|s| *s > 0.0) {
        Some(secs) => {
            if let Some((_, mut done)) = app.done_flag(id) {
                let _ = tokio::time::timeout(
                    Duration::from_secs_f64(secs.min(3600.0)),
                    done.wait_for(|d| *d),
                )
                .await;
            }
            app.job_results(id).map(|(_, r)| r)
        }
        None => None,
    };
    let cost = app.job_status(id).and_then(|(_, s)| s.cost);
    // Results read from memory are answered once stored (see `status`).
    app.writer.flush().await;
    Ok(axum::Json(SubmitJobResponse {
        job: id,
        tasks: n,
        cost,
        results,
    }))
}

async fn stored_status(app: &AppState, id: JobId) -> Result<Option<(i64, JobStatus)>, ApiError> {
    Ok(blocking(app, move |app| {
        app.read(|s| -> Result<_, StoreError> {
            let Some(job) = s.job(id)? else {
                return Ok(None);
            };
            let mut counts = Counts::default();
            for (state, n) in s.task_states(id)? {
                bump(&mut counts, state, n as i64);
            }
            let owner = s
                .accounts()?
                .into_iter()
                .find(|x| x.id == job.owner)
                .map(|x| x.name)
                .unwrap_or_default();
            Ok(Some((job.owner, status_of(&job, &owner, counts))))
        })
    })
    .await?)
}

/// A job's status as `a` may see it: from memory, else from the store.
pub async fn status(app: &AppState, a: &Account, id: JobId) -> Result<JobStatus, ApiError> {
    let found = match app.job_status(id) {
        Some(x) => {
            // What memory says is answered only once it is stored: a job reported finished
            // (or a task verified) stays so even if the coordinator dies right after, and a
            // standby that takes over reads the same from the database.
            app.writer.flush().await;
            Some(x)
        }
        None => stored_status(app, id).await?,
    };
    match found {
        Some((owner, mut s)) if visible(a, owner) => {
            if let Some(c) = s.cost.as_mut() {
                c.spent = app.job_spent(id);
            }
            Ok(s)
        }
        _ => Err(ApiError::not_found(format!("job {id}"))),
    }
}

/// A job's progress.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", security(("token" = [])),
    params(("id" = i64, Path, description = "job id")),
    responses((status = 200, body = JobStatus), (status = 404, body = ErrorBody)))]
pub async fn job_status(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(id): Path<JobId>,
) -> ApiResult<JobStatus> {
    Ok(axum::Json(status(&app, &a, id).await?))
}

/// Cancels a job: its unfinished tasks end `cancelled`.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs", security(("token" = [])),
    params(("id" = i64, Path, description = "job id")),
    responses((status = 200, body = JobStatus), (status = 404, body = ErrorBody)))]
pub async fn cancel_job(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(id): Path<JobId>,
) -> ApiResult<JobStatus> {
    status(&app, &a, id).await?;
    app.cancel(id);
    Ok(axum::Json(status(&app, &a, id).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Most jobs to list, newest first (default 50, at most 1000).
    #[serde(default)]
    limit: Option<u32>,
}

/// The caller's jobs (an admin's: everyone's), newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", security(("token" = [])),
    params(ListQuery), responses((status = 200, body = Vec<JobStatus>)))]
pub async fn list_jobs(
    State(app): State<AppState>,
    Authed(a): Authed,
    Query(q): Query<ListQuery>,
) -> ApiResult<Vec<JobStatus>> {
    let limit = q.limit.unwrap_or(50).min(1000);
    let owner = (!a.admin).then_some(a.id);
    let jobs = blocking(&app, move |app| app.read(|s| s.jobs(owner, limit))).await?;
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        out.push(status(&app, &a, j.id).await?);
    }
    Ok(axum::Json(out))
}

/// A job's results, task by task. With `?wait=SECONDS`, waits for the job to finish first.
#[utoipa::path(get, path = "/v1/jobs/{id}/results", tag = "jobs", security(("token" = [])),
    params(("id" = i64, Path, description = "job id"), WaitQuery),
    responses((status = 200, body = JobResults), (status = 404, body = ErrorBody)))]
pub async fn job_results(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(id): Path<JobId>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<JobResults> {
    if let Some(secs) = q.wait.filter(|s| *s > 0.0)
        && let Some((owner, mut done)) = app.done_flag(id)
    {
        if !visible(&a, owner) {
            return Err(ApiError::not_found(format!("job {id}")));
        }
        let _ = tokio::time::timeout(
            Duration::from_secs_f64(secs.min(3600.0)),
            done.wait_for(|d| *d),
        )
        .await;
    }
    results_of(&app, &a, id).await.map(axum::Json)
}

/// A file a task left under `/out`, as its result lists it (`path` below `/out`).
#[utoipa::path(get, path = "/v1/jobs/{id}/tasks/{index}/files/{path}", tag = "jobs", security(("token" = [])),
    params(("id" = i64, Path, description = "job id"), ("index" = u32, Path, description = "task index"),
        ("path" = String, Path, description = "the file's path below /out, as its result lists it")),
    responses((status = 200, description = "the file's bytes", content_type = "application/octet-stream", body = String),
        (status = 404, body = ErrorBody)))]
pub async fn task_file(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path((id, index, path)): Path<(JobId, u32, String)>,
) -> Result<axum::response::Response, ApiError> {
    let results = results_of(&app, &a, id).await?;
    let task = results
        .tasks
        .iter()
        .find(|t| t.index == index)
        .ok_or_else(|| ApiError::not_found(format!("task {index} of job {id}")))?;
    let file =
        task.files.iter().find(|f| f.path == path).ok_or_else(|| {
            ApiError::not_found(format!("file {path:?} of task {index} of job {id}"))
        })?;
    if file.size == 0 {
        use axum::response::IntoResponse as _;
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            Vec::<u8>::new(),
        )
            .into_response());
    }
    super::uploads::blob_response(&app, &file.sha256, "application/octet-stream").await
}

/// A job's results: from memory while the grid holds the job, else from the store.
async fn results_of(app: &AppState, a: &Account, id: JobId) -> Result<JobResults, ApiError> {
    if let Some((owner, r)) = app.job_results(id) {
        if !visible(a, owner) {
            return Err(ApiError::not_found(format!("job {id}")));
        }
        // Answered once stored (see `status`).
        app.writer.flush().await;
        return Ok(r);
    }
    let stored = blocking(app, move |app| {
        app.read(|s| -> Result<_, StoreError> {
            let Some(job) = s.job(id)? else {
                return Ok(None);
            };
            let tasks = s.tasks(id)?;
            Ok(Some((job.owner, tasks)))
        })
    })
    .await?;
    match stored {
        Some((owner, tasks)) if visible(a, owner) => Ok(JobResults {
            job: id,
            tasks: tasks
                .iter()
                .map(|t| task_result(t.index, t.state, t.outcome.as_ref(), t.attempts))
                .collect(),
        }),
        _ => Err(ApiError::not_found(format!("job {id}"))),
    }
}
