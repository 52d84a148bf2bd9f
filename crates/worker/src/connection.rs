//! Dialling the coordinator and the handshake: its challenge, this worker's signed hello with
//! its capabilities, its welcome (or a rejection, which is fatal).

use crate::{BlobCache, WorkerConfig, WorkerError, runner};
use ed25519_dalek::{Signer, SigningKey};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use runegrid_proto::PROTOCOL_VERSION;
use runegrid_proto::failover::{ACTIVE_HEADER, standby_hint};
use runegrid_proto::worker::{Capabilities, ToCoordinator, ToWorker, hello_message};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long the coordinator may take to send its challenge, and its welcome.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest frame either side sends (a program's bytes travel in one message).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
/// Frames to the coordinator.
pub(crate) type Sink = SplitSink<Socket, Message>;
/// Frames from the coordinator.
pub(crate) type Stream = SplitStream<Socket>;

/// Why a connection ended before it was welcomed, or while it ran.
pub(crate) enum SessionError {
    /// Stop the worker (rejected by the coordinator, unusable settings).
    Fatal(WorkerError),
    /// Dial again after a backoff: why this try failed.
    Retry(String),
    /// The coordinator is a standby; the active one's URL, when it named one.
    Standby(Option<String>),
}

/// A connection the coordinator welcomed.
pub(crate) struct Connection {
    pub sink: Sink,
    pub stream: Stream,
    /// How often the worker sends a heartbeat.
    pub heartbeat: Duration,
    /// The blobs the hello said this worker holds.
    pub told: Vec<String>,
}

/// The worker WebSocket's URL for a coordinator's base URL (`http://HOST:PORT`).
pub(crate) fn ws_url(base: &str) -> Result<String, WorkerError> {
    let base = base.trim_end_matches('/');
    let rest = if let Some(r) = base.strip_prefix("http://") {
        format!("ws://{r}")
    } else if let Some(r) = base.strip_prefix("https://") {
        format!("wss://{r}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_string()
    } else {
        return Err(WorkerError::Url {
            url: base.into(),
            message: "expected http://HOST:PORT".into(),
        });
    };
    Ok(format!("{rest}/v1/worker"))
}

/// A message as the text frame that carries it.
pub(crate) fn text(msg: &ToCoordinator) -> Message {
    Message::Text(
        serde_json::to_string(msg)
            .expect("messages serialize")
            .into(),
    )
}

/// Dials `url` and goes through the handshake.
pub(crate) async fn connect(
    config: &WorkerConfig,
    url: &str,
    key: &SigningKey,
    blob_cache: &BlobCache,
    gpu: Option<&runegrid_core::gpu::GpuAdapter>,
) -> Result<Connection, SessionError> {
    let (mut sink, mut stream) = dial(url, &config.token).await?.split();
    let nonce = challenge(&mut stream).await?;
    let capabilities = capabilities(config.slots, config.memory_bytes, blob_cache, gpu);
    let told = capabilities.blobs.clone();
    let hello = ToCoordinator::Hello {
        protocol: PROTOCOL_VERSION,
        public_key: hex::encode(key.verifying_key().as_bytes()),
        signature: hex::encode(key.sign(&hello_message(&nonce)).to_bytes()),
        name: config.name.clone(),
        capabilities,
    };
    sink.send(text(&hello))
        .await
        .map_err(|e| SessionError::Retry(e.to_string()))?;
    let heartbeat = welcome(&mut stream).await?;
    Ok(Connection {
        sink,
        stream,
        heartbeat,
        told,
    })
}

/// Opens the WebSocket with the account's token; refused credentials are fatal.
async fn dial(url: &str, token: &str) -> Result<Socket, SessionError> {
    let mut req = url.into_client_request().map_err(|e| {
        SessionError::Fatal(WorkerError::Url {
            url: url.into(),
            message: e.to_string(),
        })
    })?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().map_err(|_| {
            SessionError::Fatal(WorkerError::Rejected(
                "the api token has invalid characters".into(),
            ))
        })?,
    );
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    match tokio_tungstenite::connect_async_with_config(req, Some(ws_config), true).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) if resp.status().as_u16() == 503 => {
            // A standby (naming the active coordinator or not), or a coordinator not ready:
            // either way, another one of the list.
            let active = resp.headers().get(ACTIVE_HEADER).map(|v| v.as_bytes());
            Err(SessionError::Standby(
                standby_hint(503, active).unwrap_or_default(),
            ))
        }
        Err(tungstenite::Error::Http(resp)) => {
            let status = resp.status();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let why = format!("{status}: {body}");
            if status.as_u16() == 401 || status.as_u16() == 403 {
                Err(SessionError::Fatal(WorkerError::Rejected(why)))
            } else {
                Err(SessionError::Retry(why))
            }
        }
        Err(e) => Err(SessionError::Retry(e.to_string())),
    }
}

/// The nonce of the coordinator's challenge.
async fn challenge(stream: &mut Stream) -> Result<String, SessionError> {
    match handshake_message(stream).await {
        Some(Ok(ToWorker::Challenge { nonce, .. })) => Ok(nonce),
        Some(Ok(ToWorker::Reject { message })) => {
            Err(SessionError::Fatal(WorkerError::Rejected(message)))
        }
        Some(_) => Err(SessionError::Retry("expected a challenge".into())),
        None => Err(SessionError::Retry(
            "no challenge from the coordinator".into(),
        )),
    }
}

/// The heartbeat interval of the coordinator's welcome.
async fn welcome(stream: &mut Stream) -> Result<Duration, SessionError> {
    match handshake_message(stream).await {
        Some(Ok(ToWorker::Welcome {
            worker_id,
            heartbeat_ms,
        })) => {
            tracing::info!(worker = worker_id, "connected to the coordinator");
            Ok(Duration::from_millis(heartbeat_ms.max(50)))
        }
        Some(Ok(ToWorker::Reject { message })) => {
            Err(SessionError::Fatal(WorkerError::Rejected(message)))
        }
        Some(_) => Err(SessionError::Retry("expected welcome".into())),
        None => Err(SessionError::Retry(
            "no welcome from the coordinator".into(),
        )),
    }
}

/// The coordinator's next text frame, parsed; `None` when none came in time (or the
/// connection ended, or the frame was not text).
async fn handshake_message(stream: &mut Stream) -> Option<Result<ToWorker, serde_json::Error>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => Some(serde_json::from_str(&t)),
        _ => None,
    }
}

/// What this worker offers: its cores, memory, slots, platform, blob space and GPU.
fn capabilities(
    slots: u32,
    memory_bytes: Option<u64>,
    blob_cache: &BlobCache,
    gpu: Option<&runegrid_core::gpu::GpuAdapter>,
) -> Capabilities {
    Capabilities {
        gpu: gpu.cloned().map(Box::new),
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes: memory_bytes.unwrap_or_else(runner::total_memory),
        slots,
        arch: std::env::consts::ARCH.into(),
        os: std::env::consts::OS.into(),
        runtime: format!("native/{}", env!("CARGO_PKG_VERSION")),
        blob_space: blob_cache.space(),
        blobs: blob_cache.held(),
    }
}
