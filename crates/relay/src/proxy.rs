//! Every HTTP route the relay does not serve itself is forwarded to the coordinator: the
//! contribute page and its scripts (the browser worker then dials the relay, its origin), the
//! sign-up and account routes the page calls, and whatever else a user asks the relay (a job's
//! event stream included). Request bodies are buffered (up to a limit); response bodies are
//! streamed as they come, so that Server-Sent Events (`GET /v1/jobs/{id}/events`, streamed
//! chat answers) arrive through the relay as they happen.

use crate::Hub;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The largest request body forwarded (a module upload's limit, and some).
const MAX_BODY: usize = 65 << 20;

/// Headers that belong to one hop.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

pub(crate) async fn forward(State(hub): State<Arc<Hub>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", hub.base());
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return failure(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
    };
    let mut up = hub.http.request(parts.method.clone(), &url).body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            up = up.header(name, value);
        }
    }
    let resp = match up.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%url, error = %e, "cannot forward a request upstream");
            return failure(
                StatusCode::BAD_GATEWAY,
                "the relay cannot reach the coordinator",
            );
        }
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    // Each chunk is passed on as it arrives; a stream that breaks upstream ends the response
    // with an error (the client sees a truncated body, not a clean end).
    let chunks = futures_util::stream::try_unfold(resp, |mut resp| async move {
        Ok::<_, reqwest::Error>(resp.chunk().await?.map(|c| (c, resp)))
    });
    let mut out = (status, Body::from_stream(chunks)).into_response();
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            out.headers_mut().append(name, value.clone());
        }
    }
    out
}

fn failure(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"error": {"code": "upstream", "message": message}}).to_string(),
    )
        .into_response()
}
