//! What every `/v1` handler shares: the error envelope, authentication, and extractors whose
//! rejections answer in the envelope.
//!
//! Every error answer is `{"error": {"code", "message"}}` ([`ErrorBody`]). Handlers return
//! [`ApiError`]; the request extractors here ([`Json`], [`Path`], [`Query`]) turn axum's
//! plain-text rejections into `invalid_request` with the same detail; the router's
//! [`envelope`] middleware wraps whatever error answer is left (an unknown method's 405, a body
//! over its limit's 413, a WebSocket handshake's refusal).

use crate::app::App;
use crate::auth;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use runegrid_proto::{ErrorBody, ErrorDetail};
use runegrid_store::{Account, StoreError};
use serde::de::DeserializeOwned;
use std::sync::Arc;

pub type AppState = Arc<App>;

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

    pub fn not_found(what: String) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store error");
        ApiError::internal(format!("store error: {e}"))
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
        (self.status, axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<axum::Json<T>, ApiError>;

/// The stable code of an error answer that carries only a status.
pub fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UPGRADE_REQUIRED => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_client_error() => "invalid_request",
        _ => "internal",
    }
}

/// Middleware: an error answer that is not JSON (axum's own rejections and fallbacks) is
/// rewrapped in the envelope, keeping its status, its headers (`Allow`, `Retry-After`) and its
/// text as the message.
pub async fn envelope(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut out = ApiError::new(status, code_for(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name, value.clone());
        }
    }
    out
}

/// A JSON body; a malformed one is answered with `invalid_request` and serde's detail.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| Json(v))
            .map_err(|e: JsonRejection| ApiError::new(e.status(), "invalid_request", e.body_text()))
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; a malformed one is answered with `invalid_request`.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e: PathRejection| ApiError::new(e.status(), "invalid_request", e.body_text()))
    }
}

/// A query string; a malformed one is answered with `invalid_request`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e: QueryRejection| {
                ApiError::new(e.status(), "invalid_request", e.body_text())
            })
    }
}

/// Runs `f` on a blocking thread (store reads).
pub async fn blocking<T: Send + 'static>(
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

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        authenticate(app, &parts.headers).await.map(Authed)
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(t.trim().to_string())
}

/// Resolves a request's bearer token to its account.
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

/// Contributor accounts run workers; they do not upload programs or submit jobs.
pub fn may_submit(a: &Account) -> Result<(), ApiError> {
    if a.contributor {
        return Err(ApiError::forbidden(
            "a contributor account runs workers and cannot submit work: use a user account's token",
        ));
    }
    Ok(())
}

/// Whether `a` may see what `owner` owns.
pub fn visible(a: &Account, owner: i64) -> bool {
    a.admin || a.id == owner
}
