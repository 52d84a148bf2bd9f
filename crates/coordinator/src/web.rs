//! The pages the coordinator serves: the dashboard (`/`), the contribute page (`/contribute`)
//! and their assets under `/web/` (the browser worker among them). The files live in the
//! repository's `web/` folder and are built into the binary, so a coordinator needs nothing
//! beside itself.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

macro_rules! file {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/", $name))
    };
}

/// Every file under `/web/`, with its content type.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        file!("index.html"),
    ),
    (
        "contribute.html",
        "text/html; charset=utf-8",
        file!("contribute.html"),
    ),
    ("style.css", "text/css; charset=utf-8", file!("style.css")),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        file!("dashboard.js"),
    ),
    (
        "contribute.js",
        "text/javascript; charset=utf-8",
        file!("contribute.js"),
    ),
    (
        "worker.js",
        "text/javascript; charset=utf-8",
        file!("worker.js"),
    ),
    (
        "exec_worker.js",
        "text/javascript; charset=utf-8",
        file!("exec_worker.js"),
    ),
    (
        "exec.js",
        "text/javascript; charset=utf-8",
        file!("exec.js"),
    ),
    (
        "exec_fs.js",
        "text/javascript; charset=utf-8",
        file!("exec_fs.js"),
    ),
    (
        "exec_memory.js",
        "text/javascript; charset=utf-8",
        file!("exec_memory.js"),
    ),
    (
        "store.js",
        "text/javascript; charset=utf-8",
        file!("store.js"),
    ),
    ("gpu.js", "text/javascript; charset=utf-8", file!("gpu.js")),
    (
        "vendor/uplot/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        file!("vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "vendor/uplot/uPlot.min.css",
        "text/css; charset=utf-8",
        file!("vendor/uplot/uPlot.min.css"),
    ),
];

fn serve(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                // Pages change with the binary: always revalidate.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no such file: /web/{name}")).into_response(),
    }
}

/// `GET /`: the dashboard.
#[utoipa::path(get, path = "/", tag = "pages",
    responses((status = 200, description = "the dashboard", content_type = "text/html", body = String)))]
pub async fn dashboard() -> Response {
    serve("index.html")
}

/// `GET /contribute`: the contribute page.
#[utoipa::path(get, path = "/contribute", tag = "pages",
    responses((status = 200, description = "the contribute page", content_type = "text/html", body = String)))]
pub async fn contribute() -> Response {
    serve("contribute.html")
}

/// `GET /web/{*path}`: the pages' assets.
#[utoipa::path(get, path = "/web/{path}", tag = "pages",
    params(("path" = String, Path, description = "the asset's path, e.g. `dashboard.js`")),
    responses((status = 200, description = "the asset (HTML, CSS or JavaScript)", body = String),
        (status = 404, body = runegrid_proto::ErrorBody)))]
pub async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}
