//! The `/v1` HTTP API.

use crate::app::App;
use crate::auth;
use crate::blobs::BlobError;
use crate::grid::{Live, bump, now_ms, status_of, task_result};
use crate::programs::ProgramBytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use runegrid_core::{JobId, Quorum, TrustRecord};
use runegrid_proto::worker::BlobMount;
use runegrid_proto::{
    AccountInfo, BlobInfo, Counts, CreateAccount, ErrorBody, ErrorDetail, JobEvent, JobResults,
    JobStatus, ProgramInfo, SubmitJob, SubmitJobResponse, WorkerInfo,
};
use runegrid_store::{
    Account, AccountKind, NewJob, NewTask, ProgramRecord, StoreError, WorkerRecord,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

type AppState = Arc<App>;

/// A follower's receiver of a job's events.
pub type EventReceiver = tokio::sync::broadcast::Receiver<JobEvent>;

/// Most tasks one job may have.
pub const MAX_TASKS: usize = 1_000_000;
/// Largest module accepted.
pub const MAX_MODULE_BYTES: usize = 64 << 20;

pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/", get(crate::web::dashboard))
        .route("/contribute", get(crate::web::contribute))
        .route("/web/{*path}", get(crate::web::asset))
        .route("/health", get(|| async { "ok" }))
        .route("/v1/me", get(me))
        .route("/v1/accounts", post(create_account))
        .route("/v1/contributors", post(create_contributor))
        .route(
            "/v1/programs",
            post(upload_program).layer(DefaultBodyLimit::max(MAX_MODULE_BYTES)),
        )
        .route(
            "/v1/jobs",
            post(submit_job)
                .get(list_jobs)
                .layer(DefaultBodyLimit::max(256 << 20)),
        )
        .route(
            "/v1/blobs",
            post(upload_blob).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/blobs/{sha256}",
            get(download_blob)
                .put(upload_named_blob)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/chat/completions", post(crate::chat::completions))
        .route("/v1/models", get(crate::chat::models))
        .route("/v1/jobs/{id}", get(job_status).delete(cancel_job))
        .route("/v1/jobs/{id}/results", get(job_results))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/workers", get(workers))
        .route("/v1/stats", get(stats))
        .route("/v1/workers/{id}/release", post(release_worker))
        .route("/v1/worker", get(crate::ws::upgrade))
        .with_state(app)
}

/// An API error: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn not_found(what: String) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("store error: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn blocking<T: Send + 'static>(
    app: &AppState,
    f: impl FnOnce(&App) -> T + Send + 'static,
) -> T {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .expect("blocking task panicked")
}

/// The authenticated account of a request.
pub struct Authed(pub Account);

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(t.trim().to_string())
}

/// Resolves a token to its account (cached after the first lookup).
pub async fn authenticate(app: &AppState, headers: &HeaderMap) -> Result<Account, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing api token: send Authorization: Bearer TOKEN (the CLI reads RUNEGRID_TOKEN)",
        )
    })?;
    account_for_token(app, token).await
}

/// Resolves a token to its account (cached after the first lookup).
pub async fn account_for_token(app: &AppState, token: String) -> Result<Account, ApiError> {
    let hash = auth::hash_token(&token);
    if let Some(a) = app
        .accounts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&hash)
    {
        return Ok(a.clone());
    }
    let found = blocking(app, move |app| app.read(|s| auth::account_for(s, &token))).await?;
    let account = found.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid api token",
        )
    })?;
    app.accounts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(hash, account.clone());
    Ok(account)
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(app, &parts.headers).await.map(Authed)
    }
}

async fn me(Authed(a): Authed) -> Json<AccountInfo> {
    Json(account_info(a, None))
}

/// How an account is shown; `token` only right after it was made.
fn account_info(a: Account, token: Option<String>) -> AccountInfo {
    AccountInfo {
        id: a.id,
        name: a.name,
        admin: a.admin,
        contributor: a.contributor,
        token,
    }
}

async fn create_account(
    State(app): State<AppState>,
    Authed(a): Authed,
    Json(req): Json<CreateAccount>,
) -> ApiResult<AccountInfo> {
    if !a.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an admin can create accounts",
        ));
    }
    let name = req.name.trim().to_string();
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::bad(
            "invalid_request",
            "account name must be 1 to 64 characters",
        ));
    }
    let token = auth::new_token();
    let acct = match app
        .writer
        .create_account(
            name.clone(),
            auth::hash_token(&token),
            if req.admin {
                AccountKind::Admin
            } else {
                AccountKind::User
            },
        )
        .await
    {
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("account {name} already exists"),
            ));
        }
        r => r?,
    };
    Ok(Json(account_info(acct, Some(token))))
}

/// `POST /v1/contributors` (no token): makes a contributor account for a browser that opened
/// the contribute page, so that it can run workers under an account of its own (its record
/// and, later, its credits). Refused when the coordinator runs with open contributions off.
async fn create_contributor(State(app): State<AppState>) -> ApiResult<AccountInfo> {
    if !app.config.open_contributions {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this coordinator does not take anonymous contributors: sign in with an api token",
        ));
    }
    let token = auth::new_token();
    let name = format!("contributor-{}", &auth::hash_token(&token)[..10]);
    let acct = app
        .writer
        .create_account(name, auth::hash_token(&token), AccountKind::Contributor)
        .await?;
    tracing::info!(account = %acct.name, "contributor account created");
    Ok(Json(account_info(acct, Some(token))))
}

/// `GET /v1/stats` (public): workers online by kind, load, totals and recent history.
async fn stats(State(app): State<AppState>) -> Json<runegrid_proto::GridStats> {
    Json(app.stats())
}

/// Contributor accounts run workers; they do not upload programs or submit jobs.
fn may_submit(a: &Account) -> Result<(), ApiError> {
    if a.contributor {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a contributor account runs workers and cannot submit work: use a user account's token",
        ));
    }
    Ok(())
}

async fn upload_program(
    State(app): State<AppState>,
    Authed(a): Authed,
    body: axum::body::Bytes,
) -> ApiResult<ProgramInfo> {
    may_submit(&a)?;
    if body.is_empty() {
        return Err(ApiError::bad(
            "invalid_module",
            "empty module: send the .wasm bytes as the request body",
        ));
    }
    let sha = hex::encode(Sha256::digest(&body));
    let size = body.len() as u64;
    let bytes = body.to_vec();
    let instrumented = tokio::task::spawn_blocking(move || {
        runegrid_instrument::instrument(&bytes, &runegrid_instrument::Options::default())
    })
    .await
    .expect("instrument task panicked")
    .map_err(|e| ApiError::bad(instrument_error_code(&e), e.to_string()))?;
    let module = instrumented.bytes;
    let isha = hex::encode(Sha256::digest(&module));
    let info = ProgramInfo {
        program: sha.clone(),
        instrumented_sha256: isha.clone(),
        size,
        instrumented_size: module.len() as u64,
    };
    app.writer
        .put_program(ProgramRecord {
            sha256: sha.clone(),
            instrumented_sha256: isha.clone(),
            instrumented: module.clone(),
            original_size: size as i64,
            owner: a.id,
            created_at: now_ms(),
        })
        .await?;
    app.cache_program(
        &sha,
        Arc::new(ProgramBytes {
            sha256: isha,
            module,
        }),
    );
    Ok(Json(info))
}

async fn upload_blob(
    State(app): State<AppState>,
    Authed(a): Authed,
    body: axum::body::Body,
) -> ApiResult<BlobInfo> {
    store_blob(&app, &a, None, body).await
}

async fn upload_named_blob(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(sha): Path<String>,
    body: axum::body::Body,
) -> ApiResult<BlobInfo> {
    if !crate::blobs::is_sha256(&sha) {
        return Err(ApiError::bad(
            "invalid_blob",
            BlobError::BadName(sha).to_string(),
        ));
    }
    store_blob(&app, &a, Some(sha), body).await
}

/// Streams a request body into the blob store; with `expected`, the body must hash to it.
async fn store_blob(
    app: &AppState,
    a: &Account,
    expected: Option<String>,
    body: axum::body::Body,
) -> ApiResult<BlobInfo> {
    use futures_util::StreamExt as _;
    may_submit(a)?;
    let bad = |e: BlobError| {
        let code = match e {
            BlobError::Mismatch { .. } => "blob_mismatch",
            BlobError::TooLarge => "blob_too_large",
            BlobError::Io(_) => "internal",
            _ => "invalid_blob",
        };
        let status = match e {
            BlobError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BlobError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, code, e.to_string())
    };
    let mut up = app.blobs.upload().map_err(bad)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| bad(BlobError::Body(e.to_string())))?;
        up.write(&chunk).map_err(bad)?;
    }
    let info = tokio::task::spawn_blocking(move || up.finish(expected.as_deref()))
        .await
        .expect("blob task panicked")
        .map_err(bad)?;
    tracing::info!(sha256 = %info.sha256, size = info.size, account = %a.name, "blob stored");
    Ok(Json(info))
}

/// `GET /v1/blobs/{sha256}` (any account: workers fetch what their tasks mount). `HEAD` tells
/// whether the coordinator has it.
async fn download_blob(
    State(app): State<AppState>,
    Authed(_): Authed,
    Path(sha): Path<String>,
) -> Result<Response, ApiError> {
    let path = app
        .blobs
        .path(&sha)
        .map_err(|e| ApiError::bad("invalid_blob", e.to_string()))?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!("blob {sha}")));
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot read blob {sha}: {e}"),
            ));
        }
    };
    let len =
        file.metadata().await.map(|m| m.len()).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?;
    let chunks = stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/octet-stream".to_string(),
            ),
            (axum::http::header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

fn instrument_error_code(e: &runegrid_instrument::InstrumentError) -> &'static str {
    use runegrid_instrument::InstrumentError as E;
    match e {
        E::ForbiddenImport { .. } => "forbidden_import",
        _ => "invalid_module",
    }
}

async fn submit_job(
    State(app): State<AppState>,
    Authed(a): Authed,
    Query(q): Query<ResultsQuery>,
    Json(req): Json<SubmitJob>,
) -> ApiResult<SubmitJobResponse> {
    let (id, n, _) = create_job(&app, &a, req, false).await?;
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
    Ok(Json(SubmitJobResponse {
        job: id,
        tasks: n,
        results,
    }))
}

/// Most blobs one job may mount.
pub const MAX_MOUNTS: usize = 16;

/// Checks a submission, accepts it and waits until it is durable; the job's id and task count,
/// and with `follow` a receiver of its events subscribed before anything was dispatched.
pub async fn create_job(
    app: &AppState,
    a: &Account,
    req: SubmitJob,
    follow: bool,
) -> Result<(JobId, u64, Option<EventReceiver>), ApiError> {
    may_submit(a)?;
    if req.tasks.is_empty() {
        return Err(ApiError::bad(
            "invalid_job",
            "job has no tasks: give at least one input",
        ));
    }
    if req.tasks.len() > MAX_TASKS {
        return Err(ApiError::bad(
            "invalid_job",
            format!(
                "job has {} tasks; at most {MAX_TASKS} are allowed",
                req.tasks.len()
            ),
        ));
    }
    req.limits
        .validate()
        .map_err(|e| ApiError::bad("invalid_limits", e.to_string()))?;
    let (policy, replicas, agree) = req
        .resolved_policy()
        .map_err(|e| ApiError::bad("invalid_policy", e))?;
    let quorum = match req.max_attempts {
        Some(m) => Quorum::with_cap(replicas, agree, m),
        None => Quorum::new(replicas, agree),
    }
    .map_err(|e| ApiError::bad("invalid_policy", e.to_string()))?;
    let mounts = check_mounts(app, &req.blobs)?;
    // `rune` and `infer` name built-in programs; the job records the hash like any program's.
    let program_sha = crate::builtins::resolve(&req.program).to_string();
    let sha = program_sha.clone();
    let program = match app.cached_program(&sha) {
        Some(p) => Some(p),
        None => blocking(app, move |app| app.program(&sha)).await?,
    }
    .ok_or_else(|| {
        ApiError::bad(
            "unknown_program",
            format!(
                "unknown program {}: upload the module first (POST /v1/programs), or name a built-in program (\"rune\", \"infer\")",
                req.program,
            ),
        )
    })?;
    let salt: u64 = rand::random();
    let tasks: Vec<NewTask> = req
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| NewTask {
            args: t.args,
            env: t.env,
            stdin: t.stdin.into_bytes(),
            seed: seed_for(salt, i as u64),
        })
        .collect();
    let n = tasks.len() as u64;
    let new = NewJob {
        owner: a.id,
        name: req.name.unwrap_or_default(),
        program: program_sha,
        policy,
        replicas: quorum.replicas,
        agree: quorum.agree,
        max_attempts: quorum.max_attempts,
        limits: req.limits,
        created_at: now_ms(),
        blobs: req.blobs,
    };
    // Dispatch starts at once; the answer waits for the commit, so an accepted job is durable.
    let (id, seq, rx) = if follow {
        let (id, seq, rx) = app.add_job_followed(new, tasks, a.name.clone(), program, mounts);
        (id, seq, Some(rx))
    } else {
        let (id, seq) = app.add_job(new, tasks, a.name.clone(), program, mounts);
        (id, seq, None)
    };
    if app.writer.committed(seq).await.is_err() {
        app.discard_job(id);
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the job could not be stored; nothing was accepted",
        ));
    }
    tracing::debug!(job = id, tasks = n, account = %a.name, "job submitted");
    Ok((id, n, rx))
}

/// A submission's mounts: valid names, blobs the coordinator holds.
fn check_mounts(
    app: &App,
    named: &std::collections::BTreeMap<String, String>,
) -> Result<Arc<[BlobMount]>, ApiError> {
    if named.len() > MAX_MOUNTS {
        return Err(ApiError::bad(
            "invalid_blobs",
            format!(
                "{} blobs; a job may mount at most {MAX_MOUNTS}",
                named.len()
            ),
        ));
    }
    for (name, sha) in named {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(ApiError::bad(
                "invalid_blobs",
                format!("{name:?} cannot name a file under /blobs: no '/', not empty, not . or .."),
            ));
        }
        if app.blobs.size(sha).is_none() {
            return Err(ApiError::bad(
                "unknown_blob",
                format!(
                    "blob {sha} (mounted as {name}) is not on this coordinator: upload it first (PUT /v1/blobs/SHA256)"
                ),
            ));
        }
    }
    Ok(app.blobs.mounts(named))
}

/// A task's seed: the same for every replica, below 2^53 so every JSON reader keeps it exact.
fn seed_for(salt: u64, index: u64) -> u64 {
    let h = Sha256::digest(format!("runegrid-seed-v1\n{salt}\n{index}").as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) & ((1 << 53) - 1)
}

fn visible(a: &Account, owner: i64) -> bool {
    a.admin || a.id == owner
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

async fn status(app: &AppState, a: &Account, id: JobId) -> Result<JobStatus, ApiError> {
    let found = match app.job_status(id) {
        Some(x) => Some(x),
        None => stored_status(app, id).await?,
    };
    match found {
        Some((owner, s)) if visible(a, owner) => Ok(s),
        _ => Err(ApiError::not_found(format!("job {id}"))),
    }
}

async fn job_status(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(id): Path<JobId>,
) -> ApiResult<JobStatus> {
    Ok(Json(status(&app, &a, id).await?))
}

async fn cancel_job(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(id): Path<JobId>,
) -> ApiResult<JobStatus> {
    status(&app, &a, id).await?;
    app.cancel(id);
    Ok(Json(status(&app, &a, id).await?))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    limit: Option<u32>,
}

async fn list_jobs(
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
    Ok(Json(out))
}

#[derive(Deserialize)]
struct ResultsQuery {
    /// Wait up to this many seconds for the job to finish.
    #[serde(default)]
    wait: Option<f64>,
}

async fn job_results(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(id): Path<JobId>,
    Query(q): Query<ResultsQuery>,
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
    if let Some((owner, r)) = app.job_results(id) {
        if !visible(&a, owner) {
            return Err(ApiError::not_found(format!("job {id}")));
        }
        return Ok(Json(r));
    }
    let stored = blocking(&app, move |app| {
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
        Some((owner, tasks)) if visible(&a, owner) => Ok(Json(JobResults {
            job: id,
            tasks: tasks
                .iter()
                .map(|t| task_result(t.index, t.state, t.outcome.as_ref(), t.attempts))
                .collect(),
        })),
        _ => Err(ApiError::not_found(format!("job {id}"))),
    }
}

fn sse_event(e: &JobEvent) -> Event {
    Event::default()
        .event(e.name())
        .data(serde_json::to_string(e).expect("events serialize"))
}

async fn job_events(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(id): Path<JobId>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    /// A live follower's receiver, and whose stdout it must not get: attempts that had
    /// streamed before it subscribed, and every attempt once it lagged (a chunk of an attempt
    /// always reaches a follower with all the attempt's earlier chunks).
    struct Live {
        rx: tokio::sync::broadcast::Receiver<JobEvent>,
        partial: std::collections::HashSet<runegrid_core::AttemptId>,
        lagged: bool,
    }
    enum S {
        Live(Box<Live>),
        Last(Box<JobEvent>),
        End,
    }
    let mut pending = Vec::new();
    let (first, rest) = match app.subscribe(id) {
        Some(sub) => {
            let (owner, rx, counts) = (sub.owner, sub.events, sub.counts);
            let partial = sub.partial;
            pending = sub.unverified;
            if !visible(&a, owner) {
                return Err(ApiError::not_found(format!("job {id}")));
            }
            let st = status(&app, &a, id).await?;
            if st.state != "active" {
                (
                    JobEvent::Progress { counts },
                    S::Last(Box::new(JobEvent::Done {
                        state: st.state,
                        counts,
                    })),
                )
            } else {
                (
                    JobEvent::Progress { counts },
                    S::Live(Box::new(Live {
                        rx,
                        partial,
                        lagged: false,
                    })),
                )
            }
        }
        None => {
            let st = status(&app, &a, id).await?;
            (
                JobEvent::Progress { counts: st.counts },
                S::Last(Box::new(JobEvent::Done {
                    state: st.state,
                    counts: st.counts,
                })),
            )
        }
    };
    let mut head = vec![Ok(sse_event(&first))];
    head.extend(
        pending
            .into_iter()
            .map(|result| Ok(sse_event(&JobEvent::Task { result }))),
    );
    let head = stream::iter(head);
    let tail = stream::unfold(rest, |s| async move {
        match s {
            S::End => None,
            S::Last(e) => Some((Ok(sse_event(&e)), S::End)),
            S::Live(mut live) => loop {
                match live.rx.recv().await {
                    Ok(e @ JobEvent::Done { .. }) => return Some((Ok(sse_event(&e)), S::End)),
                    Ok(JobEvent::Stdout { attempt, .. })
                        if live.lagged || live.partial.contains(&attempt) => {}
                    Ok(e) => return Some((Ok(sse_event(&e)), S::Live(live))),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(skipped = n, "event stream reader lagged");
                        live.lagged = true;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            },
        }
    });
    use futures_util::StreamExt as _;
    Ok(Sse::new(head.chain(tail)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn workers(State(app): State<AppState>, Authed(a): Authed) -> ApiResult<Vec<WorkerInfo>> {
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
    Ok(Json(out))
}

/// `POST /v1/workers/{id}/release` (admin only): lifts a quarantine; the worker starts over as
/// new, its results replicated until it earns trust again.
async fn release_worker(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(id): Path<i64>,
) -> ApiResult<WorkerInfo> {
    if !a.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
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
    Ok(Json(worker_info(&app, w, &accounts, live, trust)))
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
        standing: trust.standing(&app.trust_params()).as_str().to_string(),
        score: trust.score(),
        agreed: trust.agreed,
        disagreed: trust.disagreed,
        abandoned: trust.abandoned,
        accepted_alone: trust.accepted_alone,
        speed: trust.speed,
        quarantine: trust.quarantine,
    }
}
