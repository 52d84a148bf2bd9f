//! Credits: `GET /v1/account` (the caller's balance, holds, earnings, spending; `PUT` sets its
//! leaderboard name), `GET /v1/ledger` (its statement, newest first, paged), `GET /v1/price`
//! (public: what work costs now), `GET /v1/leaderboard` (public: who earned most) and
//! `POST /v1/accounts/{name}/credits` (admin: a grant).

use super::Routes;
use crate::api::{ApiError, ApiResult, AppState, Authed, Json, Path, Query, blocking};
use axum::extract::State;
use axum::http::Method;
use runegrid_core::ledger::{LedgerError, Party};
use runegrid_proto::{
    AccountCredits, AccountSettings, Contributor, ErrorBody, GrantCredits, Leaderboard,
    LedgerEntry, PriceInfo, Statement,
};
use runegrid_store::StoreError;
use serde::Deserialize;
use std::collections::HashMap;

pub fn routes() -> Routes {
    Routes::new()
        .add(Method::GET, "/v1/account", account)
        .add(Method::PUT, "/v1/account", account_settings)
        .add(Method::GET, "/v1/leaderboard", leaderboard)
        .add(Method::GET, "/v1/ledger", ledger)
        .add(Method::GET, "/v1/price", price)
        .add(Method::POST, "/v1/accounts/{name}/credits", grant)
}

/// The caller's credits (micro-credits).
#[utoipa::path(get, path = "/v1/account", tag = "credits", security(("token" = [])),
    responses((status = 200, body = AccountCredits), (status = 401, body = ErrorBody)))]
pub async fn account(State(app): State<AppState>, Authed(a): Authed) -> axum::Json<AccountCredits> {
    axum::Json(credits_of(&app, a.id, a.name, a.display_name))
}

fn credits_of(
    app: &AppState,
    id: i64,
    name: String,
    display_name: Option<String>,
) -> AccountCredits {
    let c = app.account_credits(id);
    AccountCredits {
        account: name,
        balance: c.balance,
        held: c.held,
        earned: c.earned,
        spent: c.spent,
        display_name,
    }
}

/// Longest leaderboard name, in characters.
const MAX_DISPLAY_NAME: usize = 40;

/// Sets (or, with `null`, withdraws) the name the account shows on the leaderboard.
#[utoipa::path(put, path = "/v1/account", tag = "credits", security(("token" = [])),
    request_body = AccountSettings,
    responses((status = 200, body = AccountCredits),
        (status = 400, description = "invalid_request: an empty or too long name, or one with control characters", body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn account_settings(
    State(app): State<AppState>,
    Authed(a): Authed,
    Json(req): Json<AccountSettings>,
) -> ApiResult<AccountCredits> {
    let name = match req.display_name.as_deref().map(str::trim) {
        None => None,
        Some(n) => {
            if n.is_empty()
                || n.chars().count() > MAX_DISPLAY_NAME
                || n.chars().any(char::is_control)
            {
                return Err(ApiError::bad(
                    "invalid_request",
                    format!(
                        "a display name is 1 to {MAX_DISPLAY_NAME} characters, without control characters"
                    ),
                ));
            }
            Some(n.to_string())
        }
    };
    app.set_display_name(a.id, name.clone())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(axum::Json(credits_of(&app, a.id, a.name, name)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeaderboardQuery {
    /// Most contributors (default 20, at most 100).
    #[serde(default)]
    limit: Option<u32>,
}

/// The contributors who earned most for verified work (no token needed). Only accounts that
/// chose a display name are shown by name.
#[utoipa::path(get, path = "/v1/leaderboard", tag = "credits", params(LeaderboardQuery),
    responses((status = 200, body = Leaderboard)))]
pub async fn leaderboard(
    State(app): State<AppState>,
    Query(q): Query<LeaderboardQuery>,
) -> ApiResult<Leaderboard> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100) as usize;
    let (accounts, workers) = blocking(&app, |app| {
        app.read(|s| Ok::<_, StoreError>((s.accounts()?, s.workers()?)))
    })
    .await?;
    let names: HashMap<i64, Option<String>> = accounts
        .into_iter()
        .map(|a| (a.id, a.display_name))
        .collect();
    let mut rows: HashMap<i64, Contributor> = HashMap::new();
    let row = |id: i64| Contributor {
        rank: 0,
        name: names.get(&id).cloned().flatten(),
        earned: 0,
        tasks_verified: 0,
        time_contributed_ms: 0,
        workers: 0,
    };
    for w in workers {
        let trust = app.trust_of(w.id).unwrap_or(w.trust);
        let r = rows.entry(w.owner).or_insert_with(|| row(w.owner));
        r.workers += 1;
        r.tasks_verified += trust.agreed;
        r.time_contributed_ms += (w.last_seen - w.first_seen).max(0);
    }
    for (id, earned) in app.earnings() {
        rows.entry(id).or_insert_with(|| row(id)).earned = earned;
    }
    let mut list: Vec<Contributor> = rows
        .into_values()
        .filter(|r| r.earned > 0 || r.tasks_verified > 0)
        .collect();
    list.sort_by(|a, b| {
        (b.earned, b.tasks_verified, b.time_contributed_ms).cmp(&(
            a.earned,
            a.tasks_verified,
            a.time_contributed_ms,
        ))
    });
    list.truncate(limit);
    for (i, r) in list.iter_mut().enumerate() {
        r.rank = i as u32 + 1;
    }
    Ok(axum::Json(Leaderboard { contributors: list }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// Entries older than this sequence number (the previous page's `next_before`).
    #[serde(default)]
    before: Option<i64>,
    /// Most entries (default 50, at most 1000).
    #[serde(default)]
    limit: Option<u32>,
}

/// The caller's statement: every transfer into or out of its account, newest first.
#[utoipa::path(get, path = "/v1/ledger", tag = "credits", security(("token" = [])),
    params(StatementQuery),
    responses((status = 200, body = Statement), (status = 401, body = ErrorBody)))]
pub async fn ledger(
    State(app): State<AppState>,
    Authed(a): Authed,
    Query(q): Query<StatementQuery>,
) -> ApiResult<Statement> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let (id, before) = (a.id, q.before);
    let rows = blocking(&app, move |app| {
        app.read(|s| s.statement(id, before, limit + 1))
    })
    .await?;
    let more = rows.len() > limit as usize;
    let entries: Vec<LedgerEntry> = rows
        .into_iter()
        .take(limit as usize)
        .map(|e| {
            let incoming = e.transfer.to == Party::Account(id);
            LedgerEntry {
                seq: e.seq,
                at: e.at,
                reason: e.transfer.reason,
                amount: if incoming {
                    e.transfer.amount
                } else {
                    -e.transfer.amount
                },
                counterparty: if incoming {
                    e.transfer.from
                } else {
                    e.transfer.to
                },
                key: e.transfer.key,
            }
        })
        .collect();
    let next_before = more.then(|| entries.last().map(|e| e.seq)).flatten();
    Ok(axum::Json(Statement {
        account: a.name,
        entries,
        next_before,
    }))
}

/// What work costs now: the price per 10^9 fuel, the demand behind it (no token needed).
#[utoipa::path(get, path = "/v1/price", tag = "credits", responses((status = 200, body = PriceInfo)))]
pub async fn price(State(app): State<AppState>) -> axum::Json<PriceInfo> {
    let q = app.quote();
    axum::Json(PriceInfo {
        price: q.price,
        base: q.params.base,
        multiplier_ppm: q.multiplier,
        fee_ppm: q.params.fee_ppm,
        queued: q.queued,
        free_slots: q.free_slots,
        charging: !q.free,
    })
}

/// Grants credits to an account (admin only); answers with its credits after the grant.
#[utoipa::path(post, path = "/v1/accounts/{name}/credits", tag = "credits", security(("token" = [])),
    params(("name" = String, Path, description = "account name")),
    request_body = GrantCredits,
    responses((status = 200, body = AccountCredits),
        (status = 400, description = "invalid_request: the amount is not positive", body = ErrorBody),
        (status = 403, description = "forbidden: not an admin", body = ErrorBody),
        (status = 404, description = "not_found: no such account", body = ErrorBody)))]
pub async fn grant(
    State(app): State<AppState>,
    Authed(a): Authed,
    Path(name): Path<String>,
    Json(req): Json<GrantCredits>,
) -> ApiResult<AccountCredits> {
    if !a.admin {
        return Err(ApiError::forbidden("only an admin can grant credits"));
    }
    if req.amount <= 0 {
        return Err(ApiError::bad(
            "invalid_request",
            format!(
                "a grant is a positive amount of micro-credits, not {}",
                req.amount
            ),
        ));
    }
    let wanted = name.clone();
    let target = blocking(&app, move |app| {
        app.read(|s| Ok::<_, StoreError>(s.accounts()?.into_iter().find(|x| x.name == wanted)))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("account {name}")))?;
    let seq = app.grant(target.id, req.amount).map_err(|e| match e {
        LedgerError::Overflow(_) => ApiError::bad("invalid_request", e.to_string()),
        e => ApiError::internal(e.to_string()),
    })?;
    app.writer
        .committed(seq)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    tracing::info!(account = %target.name, amount = req.amount, by = %a.name, "credits granted");
    Ok(axum::Json(credits_of(
        &app,
        target.id,
        target.name,
        target.display_name,
    )))
}
