//! The native worker: one outbound WebSocket to the coordinator (so it works behind NAT), a
//! bounded number of sandbox runs at once, an ed25519 identity that signs every result.
//!
//! Architecture Invariant: the async runtime never runs WebAssembly. Attempts run on the
//! sandbox's runner threads (`Sandbox::spawn`), at most `slots` at once, and report to the
//! connection task through a channel.

mod blobs;
mod identity;
mod runner;

use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use runegrid_core::AttemptId;
use runegrid_proto::PROTOCOL_VERSION;
use runegrid_proto::worker::{Assign, Capabilities, ToCoordinator, ToWorker, hello_message};
use runegrid_sandbox::Blob;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub use blobs::{BlobCache, BlobError};
pub use identity::load_or_create_key;
pub use runner::Misbehaviour;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Coordinator base URL, e.g. `http://127.0.0.1:7070`.
    pub coordinator: String,
    /// API token of the account that owns this worker.
    pub token: String,
    /// Tasks run at once.
    pub slots: u32,
    /// Where the key and the program cache live.
    pub data_dir: PathBuf,
    pub name: String,
    /// Fault injection for tests and benchmarks: a worker that misbehaves on purpose.
    pub misbehaviour: Option<Misbehaviour>,
    /// Give up after this many failed connection attempts in a row (`None`: never).
    pub max_reconnects: Option<u32>,
    /// Disk bytes for blobs that tasks mount, in `<data_dir>/blobs/` (0: takes no blob tasks).
    pub blob_space: u64,
}

/// The default blob space: 8 GiB.
pub const DEFAULT_BLOB_SPACE: u64 = 8 << 30;

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot use data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid coordinator url {url}: {message}")]
    Url { url: String, message: String },
    #[error("the coordinator rejected this worker: {0}")]
    Rejected(String),
    #[error("cannot reach the coordinator at {url} after {tries} tries: {last}")]
    Unreachable {
        url: String,
        tries: u32,
        last: String,
    },
    #[error("sandbox: {0}")]
    Sandbox(String),
    #[error("invalid worker settings: {0}")]
    Config(String),
    #[error(transparent)]
    Blobs(#[from] BlobError),
}

/// Events from the runner threads to the connection.
pub(crate) enum Event {
    /// A message for the coordinator (dropped if its connection is gone).
    Out { session: u64, msg: ToCoordinator },
    /// The message that ends an attempt; its slot is free again.
    Done { session: u64, msg: ToCoordinator },
    /// A program finished compiling (or failed to).
    Compiled {
        sha256: String,
        result: Result<Arc<runegrid_sandbox::Program>, String>,
    },
    /// An attempt's blobs are loaded (or one of them cannot be: why).
    BlobsReady {
        session: u64,
        attempt: AttemptId,
        result: Result<Vec<Blob>, String>,
    },
}

fn ws_url(base: &str) -> Result<String, WorkerError> {
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

/// Runs the worker until a fatal error.
pub async fn run(config: WorkerConfig) -> Result<(), WorkerError> {
    let max = runegrid_sandbox::MAX_CONCURRENT_RUNS;
    if config.slots == 0 || config.slots > max {
        return Err(WorkerError::Config(format!(
            "slots must be between 1 and {max}, got {}",
            config.slots
        )));
    }
    std::fs::create_dir_all(config.data_dir.join("programs")).map_err(|source| {
        WorkerError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        }
    })?;
    let key = load_or_create_key(&config.data_dir)?;
    let blob_cache = Arc::new(BlobCache::open(
        config.data_dir.join("blobs"),
        config.blob_space,
        &config.coordinator,
        &config.token,
    )?);
    let url = ws_url(&config.coordinator)?;
    let sandbox = Arc::new(
        runegrid_sandbox::Sandbox::new().map_err(|e| WorkerError::Sandbox(e.to_string()))?,
    );
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<Event>();
    let mut slots = runner::Slots::new(
        config.slots,
        sandbox.clone(),
        key.clone(),
        events_tx.clone(),
        config.misbehaviour,
    );
    let mut programs: HashMap<String, Arc<runegrid_sandbox::Program>> = HashMap::new();
    let mut session: u64 = 0;
    let mut failures: u32 = 0;
    let mut backoff = Duration::from_millis(100);
    tracing::info!(public_key = %hex::encode(key.verifying_key().as_bytes()), slots = config.slots, "worker starting");
    loop {
        session += 1;
        match session_once(
            &config,
            &url,
            &key,
            session,
            &mut slots,
            &sandbox,
            &mut programs,
            &blob_cache,
            &events_tx,
            &mut events_rx,
        )
        .await
        {
            Ok(()) => {
                failures = 0;
                backoff = Duration::from_millis(100);
                tracing::warn!("connection to the coordinator ended; reconnecting");
            }
            Err(SessionError::Fatal(e)) => return Err(e),
            Err(SessionError::Retry(last)) => {
                failures += 1;
                if config.max_reconnects.is_some_and(|m| failures > m) {
                    return Err(WorkerError::Unreachable {
                        url: url.clone(),
                        tries: failures,
                        last,
                    });
                }
                tracing::warn!(error = %last, retry_in_ms = backoff.as_millis() as u64, "cannot reach the coordinator");
            }
        }
        slots.clear();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

enum SessionError {
    Fatal(WorkerError),
    Retry(String),
}

fn text(msg: &ToCoordinator) -> Message {
    Message::Text(
        serde_json::to_string(msg)
            .expect("messages serialize")
            .into(),
    )
}

#[allow(clippy::too_many_arguments)]
async fn session_once(
    config: &WorkerConfig,
    url: &str,
    key: &SigningKey,
    session: u64,
    slots: &mut runner::Slots,
    sandbox: &Arc<runegrid_sandbox::Sandbox>,
    programs: &mut HashMap<String, Arc<runegrid_sandbox::Program>>,
    blob_cache: &Arc<BlobCache>,
    events_tx: &mpsc::UnboundedSender<Event>,
    events_rx: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<(), SessionError> {
    let mut req = url.into_client_request().map_err(|e| {
        SessionError::Fatal(WorkerError::Url {
            url: url.into(),
            message: e.to_string(),
        })
    })?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", config.token).parse().map_err(|_| {
            SessionError::Fatal(WorkerError::Rejected(
                "the api token has invalid characters".into(),
            ))
        })?,
    );
    let ws_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20));
    let (ws, _) =
        match tokio_tungstenite::connect_async_with_config(req, Some(ws_config), true).await {
            Ok(x) => x,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                if status.as_u16() == 401 || status.as_u16() == 403 {
                    return Err(SessionError::Fatal(WorkerError::Rejected(format!(
                        "{status}: {body}"
                    ))));
                }
                return Err(SessionError::Retry(format!("{status}: {body}")));
            }
            Err(e) => return Err(SessionError::Retry(e.to_string())),
        };
    let (mut sink, mut stream) = ws.split();
    // Handshake.
    let nonce = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ToWorker>(&t) {
            Ok(ToWorker::Challenge { nonce, .. }) => nonce,
            Ok(ToWorker::Reject { message }) => {
                return Err(SessionError::Fatal(WorkerError::Rejected(message)));
            }
            _ => return Err(SessionError::Retry("expected a challenge".into())),
        },
        _ => {
            return Err(SessionError::Retry(
                "no challenge from the coordinator".into(),
            ));
        }
    };
    let caps = Capabilities {
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes: runner::total_memory(),
        slots: config.slots,
        arch: std::env::consts::ARCH.into(),
        os: std::env::consts::OS.into(),
        runtime: format!("native/{}", env!("CARGO_PKG_VERSION")),
        blob_space: blob_cache.space(),
        blobs: blob_cache.held(),
    };
    let mut waiting = Waiting {
        told: caps.blobs.clone(),
        ..Waiting::default()
    };
    let hello = ToCoordinator::Hello {
        protocol: PROTOCOL_VERSION,
        public_key: hex::encode(key.verifying_key().as_bytes()),
        signature: hex::encode(key.sign(&hello_message(&nonce)).to_bytes()),
        name: config.name.clone(),
        capabilities: caps,
    };
    sink.send(text(&hello))
        .await
        .map_err(|e| SessionError::Retry(e.to_string()))?;
    let heartbeat = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ToWorker>(&t) {
            Ok(ToWorker::Welcome {
                worker_id,
                heartbeat_ms,
            }) => {
                tracing::info!(worker = worker_id, "connected to the coordinator");
                Duration::from_millis(heartbeat_ms.max(50))
            }
            Ok(ToWorker::Reject { message }) => {
                return Err(SessionError::Fatal(WorkerError::Rejected(message)));
            }
            _ => return Err(SessionError::Retry("expected welcome".into())),
        },
        _ => {
            return Err(SessionError::Retry(
                "no welcome from the coordinator".into(),
            ));
        }
    };
    let mut ticker = tokio::time::interval(heartbeat);
    let ctx = Ctx {
        session,
        data_dir: &config.data_dir,
        sandbox,
        blob_cache,
        events_tx,
    };
    loop {
        let mut out = Vec::new();
        tokio::select! {
            _ = ticker.tick() => out.push(ToCoordinator::Heartbeat),
            ev = events_rx.recv() => {
                let Some(ev) = ev else { return Ok(()) };
                handle_event(ev, &ctx, slots, programs, &mut waiting, &mut out);
                while let Ok(ev) = events_rx.try_recv() {
                    handle_event(ev, &ctx, slots, programs, &mut waiting, &mut out);
                }
            }
            msg = stream.next() => {
                let t = match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                };
                let msg = match serde_json::from_str::<ToWorker>(&t) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "malformed message from the coordinator");
                        continue;
                    }
                };
                match msg {
                    ToWorker::Assign(a) if a.blobs.is_empty() => {
                        ready(&ctx, slots, programs, &mut waiting, a, Vec::new(), &mut out);
                    }
                    ToWorker::Assign(a) => {
                        // The program comes (or compiles) while the blobs load.
                        if !programs.contains_key(&a.program) {
                            need_program(&ctx, &mut waiting, &a.program, &mut out);
                        }
                        fetch_blobs(&ctx, &a);
                        waiting.blobs.insert(a.attempt, a);
                    }
                    ToWorker::Program { sha256, module } => {
                        let actual = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&module));
                        if actual != sha256 {
                            tracing::error!(expected = %sha256, %actual, "program bytes do not match their hash");
                            continue;
                        }
                        runner::store_program(&config.data_dir, &sha256, &module);
                        runner::compile_async(sandbox.clone(), sha256, module, events_tx.clone());
                    }
                    ToWorker::Cancel { attempt, .. } => {
                        // Not started yet: drop it and say so.
                        let mut found = waiting.blobs.remove(&attempt).is_some();
                        for list in waiting.program.values_mut() {
                            let before = list.len();
                            list.retain(|(a, _)| a.attempt != attempt);
                            found |= list.len() != before;
                        }
                        // A running attempt finishes and its result is ignored.
                        if found || slots.cancel(attempt) {
                            out.push(ToCoordinator::Failed { attempt, reason: "cancelled".into() });
                        }
                    }
                    ToWorker::Reject { message } => {
                        return Err(SessionError::Fatal(WorkerError::Rejected(message)));
                    }
                    ToWorker::Standing { standing, reason } => match reason {
                        Some(reason) => tracing::warn!(%standing, %reason, "the coordinator changed this worker's standing"),
                        None => tracing::info!(%standing, "the coordinator changed this worker's standing"),
                    },
                    ToWorker::Challenge { .. } | ToWorker::Welcome { .. } => {}
                }
            }
        }
        if out.is_empty() {
            continue;
        }
        for m in out {
            if sink.feed(text(&m)).await.is_err() {
                return Ok(());
            }
        }
        if sink.flush().await.is_err() {
            return Ok(());
        }
    }
}

/// What the session's event handling needs.
struct Ctx<'a> {
    session: u64,
    data_dir: &'a std::path::Path,
    sandbox: &'a Arc<runegrid_sandbox::Sandbox>,
    blob_cache: &'a Arc<BlobCache>,
    events_tx: &'a mpsc::UnboundedSender<Event>,
}

/// Attempts of this session that cannot run yet.
#[derive(Default)]
struct Waiting {
    /// Attempts (with their blobs) waiting for their program, by the program's sha256.
    program: HashMap<String, Vec<(Assign, Vec<Blob>)>>,
    /// Programs asked for (from the coordinator or the disk cache) and not compiled yet.
    asked: HashSet<String>,
    /// Attempts whose blobs are loading.
    blobs: HashMap<AttemptId, Assign>,
    /// The blobs this session last told the coordinator it holds.
    told: Vec<String>,
}

/// An attempt has its blobs: it runs once its program is compiled.
fn ready(
    ctx: &Ctx<'_>,
    slots: &mut runner::Slots,
    programs: &HashMap<String, Arc<runegrid_sandbox::Program>>,
    waiting: &mut Waiting,
    a: Assign,
    blobs: Vec<Blob>,
    out: &mut Vec<ToCoordinator>,
) {
    if let Some(p) = programs.get(&a.program) {
        slots.submit(a, p.clone(), blobs, ctx.session);
        return;
    }
    let sha = a.program.clone();
    waiting
        .program
        .entry(sha.clone())
        .or_default()
        .push((a, blobs));
    need_program(ctx, waiting, &sha, out);
}

/// Compiles the program from the disk cache, or asks the coordinator for it, unless that is
/// under way.
fn need_program(ctx: &Ctx<'_>, waiting: &mut Waiting, sha: &str, out: &mut Vec<ToCoordinator>) {
    if !waiting.asked.insert(sha.to_string()) {
        return;
    }
    if let Some(bytes) = runner::cached_program(ctx.data_dir, sha) {
        runner::compile_async(
            ctx.sandbox.clone(),
            sha.to_string(),
            bytes,
            ctx.events_tx.clone(),
        );
    } else {
        out.push(ToCoordinator::NeedProgram {
            sha256: sha.to_string(),
        });
    }
}

/// Loads an attempt's blobs off the connection task; `Event::BlobsReady` reports back.
fn fetch_blobs(ctx: &Ctx<'_>, a: &Assign) {
    let (cache, events) = (ctx.blob_cache.clone(), ctx.events_tx.clone());
    let (session, attempt, mounts) = (ctx.session, a.attempt, a.blobs.clone());
    tokio::spawn(async move {
        let mut blobs = Vec::with_capacity(mounts.len());
        let mut result = Ok(());
        for m in &mounts {
            match cache.get(m).await {
                Ok(bytes) => blobs.push(Blob::new(m.name.clone(), bytes)),
                Err(e) => {
                    tracing::warn!(attempt, blob = %m.sha256, name = %m.name, error = %e, "cannot load blob");
                    result = Err(format!("blob {}: {e}", m.name));
                    break;
                }
            }
        }
        let result = result.map(|()| blobs);
        let _ = events.send(Event::BlobsReady {
            session,
            attempt,
            result,
        });
    });
}

fn handle_event(
    ev: Event,
    ctx: &Ctx<'_>,
    slots: &mut runner::Slots,
    programs: &mut HashMap<String, Arc<runegrid_sandbox::Program>>,
    waiting: &mut Waiting,
    out: &mut Vec<ToCoordinator>,
) {
    let session = ctx.session;
    match ev {
        Event::Out { session: s, msg } => {
            if s != session {
                return;
            }
            // Chunks of one attempt that piled up meanwhile travel as one message.
            if let (
                ToCoordinator::Output { attempt, data },
                Some(ToCoordinator::Output {
                    attempt: last,
                    data: buf,
                }),
            ) = (&msg, out.last_mut())
                && attempt == last
                && buf.len() < 1 << 20
            {
                buf.extend_from_slice(data);
                return;
            }
            out.push(msg);
        }
        Event::Done { session: s, msg } => {
            slots.finished();
            if s == session {
                out.push(msg);
            }
        }
        Event::Compiled { sha256, result } => {
            waiting.asked.remove(&sha256);
            let list = waiting.program.remove(&sha256).unwrap_or_default();
            match result {
                Ok(p) => {
                    programs.insert(sha256, p.clone());
                    for (a, blobs) in list {
                        slots.submit(a, p.clone(), blobs, session);
                    }
                }
                Err(e) => {
                    tracing::error!(program = %sha256, error = %e, "program does not compile");
                    for (a, _) in list {
                        out.push(ToCoordinator::Failed {
                            attempt: a.attempt,
                            reason: format!("compile error: {e}"),
                        });
                    }
                }
            }
        }
        Event::BlobsReady {
            session: s,
            attempt,
            result,
        } => {
            // Fetching (or finding a corrupted file) may have changed what is on disk.
            let held = ctx.blob_cache.held();
            if held != waiting.told {
                waiting.told = held.clone();
                out.push(ToCoordinator::Blobs { held });
            }
            if s != session {
                return;
            }
            // Absent: cancelled meanwhile.
            let Some(a) = waiting.blobs.remove(&attempt) else {
                return;
            };
            match result {
                Ok(blobs) => ready(ctx, slots, programs, waiting, a, blobs, out),
                Err(reason) => out.push(ToCoordinator::Failed { attempt, reason }),
            }
        }
    }
}
