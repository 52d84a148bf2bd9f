//! The native worker: one outbound WebSocket to the coordinator (so it works behind NAT), a
//! bounded number of sandbox runs at once, an ed25519 identity that signs every result.
//!
//! Architecture Invariant: the async runtime never runs WebAssembly. Attempts run on the
//! sandbox's runner threads (`Sandbox::spawn`), at most `slots` at once, and report to the
//! connection task through a channel.

mod identity;
mod runner;

use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use runegrid_proto::PROTOCOL_VERSION;
use runegrid_proto::worker::{Assign, Capabilities, ToCoordinator, ToWorker, hello_message};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

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
}

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
        blob_space: 0,
        blobs: vec![],
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
    // Assignments waiting for their program.
    let mut waiting: HashMap<String, Vec<Assign>> = HashMap::new();
    let mut asked: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if sink.send(text(&ToCoordinator::Heartbeat)).await.is_err() {
                    return Ok(());
                }
            }
            ev = events_rx.recv() => {
                let Some(ev) = ev else { return Ok(()) };
                let mut out = Vec::new();
                handle_event(ev, session, slots, programs, &mut waiting, &mut out);
                while let Ok(ev) = events_rx.try_recv() {
                    handle_event(ev, session, slots, programs, &mut waiting, &mut out);
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
                    ToWorker::Assign(a) => {
                        if let Some(p) = programs.get(&a.program) {
                            slots.submit(a, p.clone(), session);
                        } else if let Some(bytes) = runner::cached_program(&config.data_dir, &a.program) {
                            let sha = a.program.clone();
                            waiting.entry(sha.clone()).or_default().push(a);
                            if asked.insert(sha.clone()) {
                                runner::compile_async(sandbox.clone(), sha, bytes, events_tx.clone());
                            }
                        } else {
                            let sha = a.program.clone();
                            waiting.entry(sha.clone()).or_default().push(a);
                            if asked.insert(sha.clone()) {
                                let m = ToCoordinator::NeedProgram { sha256: sha };
                                if sink.send(text(&m)).await.is_err() {
                                    return Ok(());
                                }
                            }
                        }
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
                        let mut found = false;
                        for list in waiting.values_mut() {
                            let before = list.len();
                            list.retain(|a| a.attempt != attempt);
                            found |= list.len() != before;
                        }
                        // A running attempt finishes and its result is ignored.
                        if found || slots.cancel(attempt) {
                            let m = ToCoordinator::Failed { attempt, reason: "cancelled".into() };
                            if sink.send(text(&m)).await.is_err() {
                                return Ok(());
                            }
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
    }
}

fn handle_event(
    ev: Event,
    session: u64,
    slots: &mut runner::Slots,
    programs: &mut HashMap<String, Arc<runegrid_sandbox::Program>>,
    waiting: &mut HashMap<String, Vec<Assign>>,
    out: &mut Vec<ToCoordinator>,
) {
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
            let list = waiting.remove(&sha256).unwrap_or_default();
            match result {
                Ok(p) => {
                    programs.insert(sha256, p.clone());
                    for a in list {
                        slots.submit(a, p.clone(), session);
                    }
                }
                Err(e) => {
                    tracing::error!(program = %sha256, error = %e, "program does not compile");
                    for a in list {
                        out.push(ToCoordinator::Failed {
                            attempt: a.attempt,
                            reason: format!("compile error: {e}"),
                        });
                    }
                }
            }
        }
    }
}
