//! Accounts: `GET /v1/me`, `POST /v1/accounts` (admin), `POST /v1/contributors` (no token,
//! rate-limited per client address).

use super::Routes;
use crate::api::{ApiError, ApiResult, AppState, Authed, Json};
use crate::auth;
use axum::extract::State;
use axum::handler::Handler as _;
use axum::http::{Method, StatusCode};
use runegrid_proto::{AccountInfo, CreateAccount};
use runegrid_store::{Account, AccountKind, StoreError};

pub fn routes(signup_limit: Option<crate::limit::Layer>) -> Routes {
    let routes = Routes::new().add(Method::GET, "/v1/me", me).add(
        Method::POST,
        "/v1/accounts",
        create_account,
    );
    match signup_limit {
        Some(l) => routes.add(
            Method::POST,
            "/v1/contributors",
            create_contributor.layer(l),
        ),
        None => routes.add(Method::POST, "/v1/contributors", create_contributor),
    }
}

/// The account of the token.
#[utoipa::path(get, path = "/v1/me", tag = "accounts", security(("token" = [])),
    responses((status = 200, body = AccountInfo), (status = 401, body = runegrid_proto::ErrorBody)))]
pub async fn me(Authed(a): Authed) -> axum::Json<AccountInfo> {
    axum::Json(account_info(a, None))
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

/// Makes a user (or admin) account; the answer holds its token, shown once.
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", security(("token" = [])),
    request_body = CreateAccount,
    responses((status = 200, body = AccountInfo),
        (status = 400, description = "invalid_request", body = runegrid_proto::ErrorBody),
        (status = 403, description = "forbidden: not an admin", body = runegrid_proto::ErrorBody),
        (status = 409, description = "conflict: the name is taken", body = runegrid_proto::ErrorBody)))]
pub async fn create_account(
    State(app): State<AppState>,
    Authed(a): Authed,
    Json(req): Json<CreateAccount>,
) -> ApiResult<AccountInfo> {
    if !a.admin {
        return Err(ApiError::forbidden("only an admin can create accounts"));
    }
    let name = req.name.trim().to_string();
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::bad(
            "invalid_request",
            "account name must be 1 to 64 characters",
        ));
    }
    let token = auth::new_token();
    let kind = if req.admin {
        AccountKind::Admin
    } else {
        AccountKind::User
    };
    let acct = match app
        .create_account(name.clone(), auth::hash_token(&token), kind)
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
    Ok(axum::Json(account_info(acct, Some(token))))
}

/// `POST /v1/contributors` (no token): makes a contributor account for a browser that opened
/// the contribute page, so that it can run workers under an account of its own (its record
/// and, later, its credits). Refused when the coordinator runs with open contributions off;
/// limited per client address (`serve --signup-burst`, `--signup-per-minute`).
#[utoipa::path(post, path = "/v1/contributors", tag = "accounts",
    responses((status = 200, body = AccountInfo),
        (status = 403, description = "forbidden: open contributions are off", body = runegrid_proto::ErrorBody),
        (status = 429, description = "rate_limited: too many sign-ups from this address; see Retry-After",
            body = runegrid_proto::ErrorBody, headers(("Retry-After" = u64, description = "seconds to wait")))))]
pub async fn create_contributor(State(app): State<AppState>) -> ApiResult<AccountInfo> {
    if !app.config.open_contributions {
        return Err(ApiError::forbidden(
            "this coordinator does not take anonymous contributors: sign in with an api token",
        ));
    }
    let token = auth::new_token();
    let name = format!("contributor-{}", &auth::hash_token(&token)[..10]);
    let acct = app
        .create_account(name, auth::hash_token(&token), AccountKind::Contributor)
        .await?;
    tracing::info!(account = %acct.name, "contributor account created");
    Ok(axum::Json(account_info(acct, Some(token))))
}
