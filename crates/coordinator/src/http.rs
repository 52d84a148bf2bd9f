//! The coordinator's HTTP surface: one router that merges every module's routes, the
//! middleware every answer passes through (metrics, the error envelope), and the routes for
//! operators (`/health`, `/metrics`, `/v1/openapi.json`).
//!
//! Routes are added through [`Routes`], which records each (method, path) as the router is
//! built: the OpenAPI test checks that every one of them is in the document.

mod accounts;
mod credits;
mod events;
mod jobs;
mod uploads;
mod workers;

use crate::api::{ApiError, AppState};
use axum::Router;
use axum::extract::State;
use axum::handler::Handler;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use std::sync::LazyLock;
use utoipa::OpenApi as _;

/// Routes under construction, and the (method, path) of each.
pub struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, &'static str)>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Serves `method` on `path` with `handler` (a handler with its own layers, if any).
    pub fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a method axum routes");
        self.router = self.router.route(path, on(filter, handler));
        self.table.push((method, path));
        self
    }

    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Every (method, path) served, paths as the router spells them (`{id}`, `{*path}`).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn table(&self) -> &[(Method, &'static str)] {
        &self.table
    }
}

impl Default for Routes {
    fn default() -> Routes {
        Routes::new()
    }
}

/// Every route the coordinator serves; `signup_limit` guards `POST /v1/contributors`.
pub fn routes(signup_limit: Option<crate::limit::Layer>) -> Routes {
    Routes::new()
        .add(Method::GET, "/", crate::web::dashboard)
        .add(Method::GET, "/contribute", crate::web::contribute)
        .add(Method::GET, "/web/{*path}", crate::web::asset)
        .add(Method::GET, "/health", health)
        .add(Method::GET, "/metrics", metrics)
        .add(Method::GET, "/v1/openapi.json", openapi_json)
        .merge(accounts::routes(signup_limit))
        .merge(credits::routes())
        .merge(jobs::routes())
        .merge(events::routes())
        .merge(uploads::routes())
        .merge(workers::routes())
        .add(
            Method::POST,
            "/v1/chat/completions",
            crate::chat::completions,
        )
        .add(Method::GET, "/v1/models", crate::chat::models)
        .add(Method::GET, "/v1/worker", crate::ws::upgrade)
        .add(Method::GET, "/v1/relay", crate::relay::upgrade)
}

/// The coordinator's router: every route, unknown paths answered 404 `not_found`, every error
/// answer in the envelope, every request counted.
pub fn router(app: AppState) -> Router {
    let signup_limit = app.config.signup_limit.and_then(crate::limit::layer);
    let metrics = app.config.metrics.clone();
    routes(signup_limit)
        .router
        .fallback(not_found)
        .layer(axum::middleware::from_fn(crate::api::envelope))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::track,
        ))
        .with_state(app)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {method} {}: see /v1/openapi.json for the api",
            uri.path()
        ),
    )
}

/// Whether the coordinator answers.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
pub async fn health() -> &'static str {
    "ok"
}

/// The coordinator's metrics in Prometheus' text format (no token needed; see the README for
/// the metric names).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4",
        content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let text = app.config.metrics.render(&app.gauges());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API",
        content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Response {
    static DOC: LazyLock<String> =
        LazyLock::new(|| openapi().to_pretty_json().expect("the document serializes"));
    ([(header::CONTENT_TYPE, "application/json")], DOC.as_str()).into_response()
}

/// The OpenAPI document of the coordinator's HTTP API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "runegrid",
        description = "The runegrid coordinator's HTTP API. Every error answer is \
            `{\"error\": {\"code\", \"message\"}}` (ErrorBody); most routes need an api token \
            (`Authorization: Bearer TOKEN`)."
    ),
    paths(
        crate::web::dashboard,
        crate::web::contribute,
        crate::web::asset,
        health,
        metrics,
        openapi_json,
        accounts::me,
        accounts::create_account,
        accounts::create_contributor,
        credits::account,
        credits::account_settings,
        credits::leaderboard,
        credits::ledger,
        credits::price,
        credits::grant,
        jobs::submit_job,
        jobs::list_jobs,
        jobs::job_status,
        jobs::cancel_job,
        jobs::job_results,
        jobs::task_file,
        events::job_events,
        uploads::upload_program,
        uploads::upload_blob,
        uploads::upload_named_blob,
        uploads::download_blob,
        workers::workers,
        workers::release_worker,
        workers::stats,
        crate::chat::completions,
        crate::chat::models,
        crate::ws::upgrade,
        crate::relay::upgrade,
    ),
    components(schemas(runegrid_proto::ErrorBody)),
    modifiers(&TokenAuth),
    tags(
        (name = "jobs", description = "Submit jobs, follow them, read their results"),
        (name = "programs", description = "WebAssembly modules, validated and instrumented at upload"),
        (name = "blobs", description = "Read-only files that tasks mount, named by their SHA-256"),
        (name = "accounts", description = "Accounts and their api tokens"),
        (name = "credits", description = "Balances, statements, prices and grants, in micro-credits"),
        (name = "grid", description = "Workers and the grid's activity"),
        (name = "chat", description = "OpenAI-compatible chat completions, computed and verified on the grid"),
        (name = "workers", description = "The worker protocol's WebSocket"),
        (name = "operations", description = "Health, metrics and this document"),
        (name = "pages", description = "The dashboard and the contribute page"),
    )
)]
struct ApiDoc;

/// The `token` security scheme: an api token as a bearer token.
struct TokenAuth;

impl utoipa::Modify for TokenAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        doc.components.get_or_insert_with(Default::default).add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An api token (an admin's is in DATA/admin.token; `POST /v1/accounts` makes more)",
                    ))
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (method, path) the router serves is in the OpenAPI document, and the document
    /// names no route the router does not serve.
    #[test]
    fn the_openapi_document_covers_every_route() {
        let doc = openapi();
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        let served: Vec<(String, String)> = routes(None)
            .table()
            .iter()
            .map(|(m, p)| (m.as_str().to_lowercase(), p.replace("{*", "{")))
            .collect();
        assert!(served.len() >= 25, "{served:?}");
        for (method, path) in &served {
            assert!(
                json["paths"][path][method].is_object(),
                "{method} {path} is served but not in the OpenAPI document"
            );
        }
        let documented: Vec<(String, String)> = json["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| {
                        ["get", "put", "post", "delete", "patch", "head", "options"]
                            .contains(&k.as_str())
                    })
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        for d in &documented {
            assert!(served.contains(d), "{d:?} is documented but not served");
        }
        for name in [
            "ErrorBody",
            "SubmitJob",
            "JobStatus",
            "ChatRequest",
            "Limits",
        ] {
            assert!(
                json["components"]["schemas"][name].is_object(),
                "no schema {name}"
            );
        }
    }
}
