//! Programs and blobs: `POST /v1/programs`, `POST /v1/blobs`, `PUT`/`GET /v1/blobs/{sha256}`.

use super::Routes;
use crate::api::{ApiError, ApiResult, AppState, Authed, Path, may_submit};
use crate::blobs::BlobError;
use crate::grid::now_ms;
use crate::programs::ProgramBytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::handler::Handler as _;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use runegrid_proto::{BlobInfo, ErrorBody, ProgramInfo, ProgramKind};
use runegrid_store::{Account, ProgramRecord};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

/// Largest module accepted.
pub const MAX_MODULE_BYTES: usize = 64 << 20;

pub fn routes() -> Routes {
    Routes::new()
        .add(
            Method::POST,
            "/v1/programs",
            upload_program.layer(DefaultBodyLimit::max(MAX_MODULE_BYTES)),
        )
        .add(
            Method::POST,
            "/v1/blobs",
            upload_blob.layer(DefaultBodyLimit::disable()),
        )
        .add(
            Method::PUT,
            "/v1/blobs/{sha256}",
            upload_named_blob.layer(DefaultBodyLimit::disable()),
        )
        .add(Method::GET, "/v1/blobs/{sha256}", download_blob)
}

/// Uploads a program (the body: its bytes), named by the SHA-256 of the uploaded bytes: a
/// WebAssembly module, validated and instrumented, or a GPU kernel (a JSON object: `shader`
/// (WGSL), `entry_point`, `buffers`, `dispatches`), checked with naga and its loops guarded.
#[utoipa::path(post, path = "/v1/programs", tag = "programs", security(("token" = [])),
    request_body(content = String, content_type = "application/wasm", description = "the module's bytes, or the kernel's JSON"),
    responses((status = 200, body = ProgramInfo),
        (status = 400, description = "invalid_module, forbidden_import, invalid_kernel", body = ErrorBody),
        (status = 413, description = "too_large: over 64 MiB", body = ErrorBody)))]
pub async fn upload_program(
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
    let kind = if runegrid_core::gpu::is_kernel(&bytes) {
        ProgramKind::Gpu
    } else {
        ProgramKind::Wasm
    };
    let module = tokio::task::spawn_blocking(move || match kind {
        ProgramKind::Wasm => {
            runegrid_instrument::instrument(&bytes, &runegrid_instrument::Options::default())
                .map(|m| m.bytes)
                .map_err(|e| ApiError::bad(instrument_error_code(&e), e.to_string()))
        }
        ProgramKind::Gpu => {
            let invalid =
                |e: runegrid_gpu::KernelError| ApiError::bad("invalid_kernel", e.to_string());
            let (kernel, _) = runegrid_gpu::parse(&bytes, &runegrid_gpu::GpuLimits::default())
                .map_err(invalid)?;
            let guarded = runegrid_gpu::guard(
                &kernel,
                kernel
                    .loop_budget
                    .unwrap_or(runegrid_gpu::DEFAULT_LOOP_BUDGET),
            )
            .map_err(invalid)?;
            let mut guarded = guarded;
            guarded.work = None;
            let checked =
                runegrid_gpu::check_guarded(&guarded, &runegrid_gpu::GpuLimits::default())
                    .map_err(invalid)?;
            guarded.work = Some(checked.work(&guarded));
            Ok(guarded.to_json())
        }
    })
    .await
    .expect("instrument task panicked")?;
    let isha = hex::encode(Sha256::digest(&module));
    let info = ProgramInfo {
        program: sha.clone(),
        instrumented_sha256: isha.clone(),
        size,
        instrumented_size: module.len() as u64,
        kind,
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
    Ok(axum::Json(info))
}

fn instrument_error_code(e: &runegrid_instrument::InstrumentError) -> &'static str {
    use runegrid_instrument::InstrumentError as E;
    match e {
        E::ForbiddenImport { .. } => "forbidden_import",
        _ => "invalid_module",
    }
}

/// Uploads a blob (the body: its bytes), named by their SHA-256.
#[utoipa::path(post, path = "/v1/blobs", tag = "blobs", security(("token" = [])),
    request_body(content = String, content_type = "application/octet-stream"),
    responses((status = 200, body = BlobInfo),
        (status = 400, description = "invalid_blob", body = ErrorBody),
        (status = 413, description = "blob_too_large", body = ErrorBody)))]
pub async fn upload_blob(
    State(app): State<AppState>,
    Authed(a): Authed,
    body: axum::body::Body,
) -> ApiResult<BlobInfo> {
    store_blob(&app, &a, None, body).await
}

/// Uploads a blob under the SHA-256 its bytes must hash to.
#[utoipa::path(put, path = "/v1/blobs/{sha256}", tag = "blobs", security(("token" = [])),
    params(("sha256" = String, Path, description = "SHA-256 of the bytes, 64 lowercase hex digits")),
    request_body(content = String, content_type = "application/octet-stream"),
    responses((status = 200, body = BlobInfo),
        (status = 400, description = "invalid_blob, blob_mismatch", body = ErrorBody),
        (status = 413, description = "blob_too_large", body = ErrorBody)))]
pub async fn upload_named_blob(
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
            BlobError::Io(_) | BlobError::Database(_) => "internal",
            _ => "invalid_blob",
        };
        let status = match e {
            BlobError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BlobError::Io(_) | BlobError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
    Ok(axum::Json(info))
}

/// A blob's bytes (any account: workers fetch what their tasks mount). `HEAD` tells whether
/// the coordinator has it.
#[utoipa::path(get, path = "/v1/blobs/{sha256}", tag = "blobs", security(("token" = [])),
    params(("sha256" = String, Path, description = "SHA-256 of the bytes")),
    responses((status = 200, description = "the blob's bytes", content_type = "application/octet-stream", body = String),
        (status = 404, body = ErrorBody)))]
pub async fn download_blob(
    State(app): State<AppState>,
    Authed(_): Authed,
    Path(sha): Path<String>,
) -> Result<Response, ApiError> {
    blob_response(&app, &sha, "application/octet-stream").await
}

/// The bytes of blob `sha`, streamed, as `content_type`.
pub(super) async fn blob_response(
    app: &AppState,
    sha: &str,
    content_type: &str,
) -> Result<Response, ApiError> {
    app.blobs
        .path(sha)
        .map_err(|e| ApiError::bad("invalid_blob", e.to_string()))?;
    // The file, fetched from the database first when it is only there (PostgreSQL store).
    let blobs = app.blobs.clone();
    let name = sha.to_string();
    let path = match tokio::task::spawn_blocking(move || blobs.fetch(&name))
        .await
        .expect("blob fetch panicked")
    {
        Ok(Some(path)) => path,
        Ok(None) => return Err(ApiError::not_found(format!("blob {sha}"))),
        Err(e) => return Err(ApiError::internal(format!("cannot read blob {sha}: {e}"))),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!("blob {sha}")));
        }
        Err(e) => return Err(ApiError::internal(format!("cannot read blob {sha}: {e}"))),
    };
    let len = file
        .metadata()
        .await
        .map(|m| m.len())
        .map_err(|e| ApiError::internal(e.to_string()))?;
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
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}
