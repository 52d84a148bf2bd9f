//! `GET /v1/blobs/{sha256}` on the relay: a blob of an attempt the relay forwarded, to a worker
//! connected through it, served from the relay's cache (`runegrid_worker::BlobCache`: fetched
//! upstream once with the operator's token, checked against its hash, kept on disk). Any other
//! request for a blob (a blob the relay has seen in no assignment, a token of no connected
//! worker) is forwarded to the coordinator, which decides.

use crate::{Hub, lock};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use runegrid_proto::worker::BlobMount;
use runegrid_worker::BlobError;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

pub(crate) async fn download(State(hub): State<Arc<Hub>>, req: Request) -> Response {
    let sha = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let size = lock(&hub.blob_sizes).get(&sha).copied();
    let known = crate::session::bearer(req.headers()).is_some_and(|t| hub.knows_token(&t));
    let Some(size) = size.filter(|_| known) else {
        return crate::proxy::forward(State(hub), req).await;
    };
    let mount = BlobMount {
        name: String::new(),
        sha256: sha.clone(),
        size,
    };
    match hub.blobs.get(&mount).await {
        Ok(bytes) => {
            hub.stats
                .blob_bytes_served
                .fetch_add(bytes.len() as u64, Relaxed);
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                axum::body::Bytes::from_owner(bytes),
            )
                .into_response()
        }
        Err(e) => {
            let (status, code) = match e {
                BlobError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
                _ => (StatusCode::BAD_GATEWAY, "upstream"),
            };
            tracing::warn!(blob = %sha, error = %e, "cannot serve a blob");
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"error": {"code": code, "message": e.to_string()}}).to_string(),
            )
                .into_response()
        }
    }
}
