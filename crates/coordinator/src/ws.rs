//! One task per worker connection: challenge, hello, then messages both ways. A connection
//! is a sink of [`ToWorker`] and a stream of [`Inbound`] text, whatever carries it: a
//! worker's own WebSocket (`/v1/worker`), or a session of a relay's (`relay.rs`).

use crate::api::{ApiError, Query, account_for_token, authenticate, bearer};
use crate::app::App;
use crate::grid::now_ms;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use futures_util::{Sink, SinkExt, StreamExt};
use runegrid_core::{AttemptId, Loss, WorkerId};
use runegrid_proto::PROTOCOL_VERSION;
use runegrid_proto::worker::{
    AssignDigest, Capabilities, ResultFault, ToCoordinator, ToWorker, assign_digest, check_failure,
    hello_message,
};
use runegrid_store::{Account, NewWorker};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest message a worker may send (results carry stdout).
pub(crate) const MAX_MESSAGE: usize = 200 << 20;
/// The read buffer each connection starts with. Most of what workers send is small
/// (heartbeats, results of a few hundred bytes) and the buffer grows for a larger message;
/// tungstenite's default, 128 KiB allocated at the upgrade, made each idle worker cost the
/// coordinator about 140 KiB of RSS.
const READ_BUFFER: usize = 4 << 10;

/// `?token=`: browsers cannot set headers on a WebSocket, so a browser worker passes its
/// token in the query instead.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkerQuery {
    /// The api token, for clients that cannot send `Authorization` (browsers).
    token: Option<String>,
}

/// The worker protocol: a WebSocket upgrade (`GET` with `Upgrade: websocket`); JSON frames
/// both ways, from the coordinator's `challenge` on (see `runegrid_proto::worker`).
#[utoipa::path(get, path = "/v1/worker", tag = "workers", security(("token" = [])), params(WorkerQuery),
    responses((status = 101, description = "switching to the worker protocol's WebSocket"),
        (status = 400, description = "invalid_request: not a WebSocket upgrade", body = runegrid_proto::ErrorBody),
        (status = 401, description = "unauthorized", body = runegrid_proto::ErrorBody)))]
pub async fn upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<WorkerQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let account = match q.token {
        Some(t) if bearer(&headers).is_none() => account_for_token(&app, t).await?,
        _ => authenticate(&app, &headers).await?,
    };
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            if let Err(e) = serve_socket(app, account, socket).await {
                tracing::info!(error = %e, "worker connection ended");
            }
        }))
}

fn send_text(msg: &ToWorker) -> Message {
    Message::Text(
        serde_json::to_string(msg)
            .expect("messages serialize")
            .into(),
    )
}

/// What a worker's connection brings the coordinator, whatever carries it: a message's text,
/// or the end of the connection (how the worker's attempts are lost, and why).
pub(crate) type Inbound = Result<Utf8Bytes, (Loss, String)>;

/// What carries a worker's connection.
#[derive(Clone)]
pub(crate) enum Carrier {
    /// Its own WebSocket.
    Direct,
    /// A session of a relay's connection (`relay.rs`).
    Relay(Arc<crate::relay::RelayLink>),
}

/// The worker's side of a connection once it proved its key.
struct Hello {
    key: VerifyingKey,
    name: String,
    caps: Capabilities,
    /// When the hello came, among all connections' (`grid::hello_order`).
    order: u64,
}

/// A registered connection: the worker's id and connection number in the grid.
struct Session {
    app: Arc<App>,
    id: WorkerId,
    conn: u64,
    key: VerifyingKey,
    carrier: Carrier,
    /// When the worker was last heard from (any message proves it alive); a relayed worker's
    /// is its relay's.
    heard: Arc<crate::grid::Heard>,
    /// The digest of every assignment sent on this connection and not yet answered, taken as
    /// it was sent: a result's signature must cover it.
    sent: Sent,
    /// Where its results' signatures are checked (`proto::signatures`).
    checker: runegrid_proto::signatures::Checker,
}

/// Assignment digests by attempt, shared by a connection's outbound task and its session.
type Sent = Arc<Mutex<HashMap<AttemptId, AssignDigest>>>;

/// What the message loop does after a message.
pub(crate) enum Flow {
    Continue,
    /// The connection ends; how the worker's attempts are lost, and why.
    End(Loss, String),
    /// A result to check (its signature in a batch with other connections'), before the
    /// connection's next message is read.
    Check(Box<Claim>),
}

/// A result, and the digest of the assignment it answers.
pub(crate) struct Claim {
    assign: AssignDigest,
    result: runegrid_proto::worker::AttemptResult,
}

/// A direct connection: the WebSocket as a sink of messages and a stream of [`Inbound`].
async fn serve_socket(app: Arc<App>, account: Account, socket: WebSocket) -> Result<(), String> {
    let (sink, stream) = socket.split();
    let sink = sink.with(|m: ToWorker| std::future::ready(Ok::<_, axum::Error>(send_text(&m))));
    let stream = stream.filter_map(|m| {
        std::future::ready(match m {
            Ok(Message::Text(t)) => Some(Ok(t)),
            Ok(Message::Close(_)) => Some(Err((
                Loss::Disconnected,
                "worker closed the connection".to_string(),
            ))),
            Err(e) => Some(Err((Loss::Disconnected, format!("connection error: {e}")))),
            Ok(_) => None,
        })
    });
    serve(app, account, Box::pin(sink), stream, Carrier::Direct).await
}

/// One worker's connection, carried by `carrier`: the handshake, registration, then its
/// messages until it ends. The same for every carrier, so a relayed worker is checked,
/// registered, scheduled and trusted exactly as a directly connected one.
pub(crate) async fn serve<S, R>(
    app: Arc<App>,
    account: Account,
    mut sink: S,
    mut stream: R,
    carrier: Carrier,
) -> Result<(), String>
where
    S: Sink<ToWorker> + Unpin + Send + 'static,
    S::Error: std::fmt::Display,
    R: futures_util::Stream<Item = Inbound> + Unpin,
{
    let _open = app.config.metrics.open(crate::metrics::Stream::WebSocket);
    let hello = handshake(&mut sink, &mut stream, &account).await?;
    let (session, rx) = register(app, &account, hello, carrier).await?;
    let mut outbound = tokio::spawn(send_queued(sink, rx, session.sent.clone()));
    let (loss, why) = loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = &mut outbound => break (Loss::Disconnected, "coordinator dropped the connection".to_string()),
        };
        let text = match msg {
            None => break (Loss::Disconnected, "connection closed".to_string()),
            Some(Err(end)) => break end,
            Some(Ok(t)) => t,
        };
        let mut flow = session.handle(&text);
        if let Flow::Check(claim) = flow {
            let Claim { assign, result } = *claim;
            let checked = session
                .checker
                .check_result(session.key, &assign, &result)
                .await;
            flow = session.on_checked(result, checked);
        }
        if let Flow::End(loss, why) = flow {
            break (loss, why);
        }
    };
    tracing::info!(worker = session.id, reason = %why, "worker disconnected");
    let why = match loss {
        Loss::Left => why,
        _ => format!("worker disconnected: {why}"),
    };
    session
        .app
        .worker_gone(session.id, session.conn, loss, &why);
    outbound.abort();
    Ok(())
}

/// Challenge, hello: the worker proves its key and says what it offers.
async fn handshake<S, R>(sink: &mut S, stream: &mut R, account: &Account) -> Result<Hello, String>
where
    S: Sink<ToWorker> + Unpin,
    S::Error: std::fmt::Display,
    R: futures_util::Stream<Item = Inbound> + Unpin,
{
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    sink.send(ToWorker::Challenge {
        protocol: PROTOCOL_VERSION,
        nonce: nonce.clone(),
    })
    .await
    .map_err(|e| e.to_string())?;
    let hello = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .map_err(|_| "no hello within 10 s".to_string())?;
    let Some(Ok(text)) = hello else {
        return Err("connection closed before hello".into());
    };
    match check_hello(&text, &nonce) {
        Ok((key, name, caps)) => Ok(Hello {
            key,
            name,
            caps,
            order: crate::grid::hello_order(),
        }),
        Err(message) => {
            tracing::warn!(%message, account = %account.name, "worker rejected");
            let _ = sink
                .send(ToWorker::Reject {
                    message: message.clone(),
                })
                .await;
            let _ = sink.close().await;
            Err(message)
        }
    }
}

/// Records the worker (its key, owner and capabilities) and puts it on the grid; returns the
/// session and the receiver of everything queued for the worker.
async fn register(
    app: Arc<App>,
    account: &Account,
    hello: Hello,
    carrier: Carrier,
) -> Result<(Session, mpsc::UnboundedReceiver<ToWorker>), String> {
    let record = app
        .writer
        .upsert_worker(NewWorker {
            public_key: hex::encode(hello.key.as_bytes()),
            owner: account.id,
            name: hello.name.clone(),
            capabilities: serde_json::to_value(&hello.caps).expect("capabilities serialize"),
            at: now_ms(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let id = record.id;
    let (tx, rx) = mpsc::unbounded_channel::<ToWorker>();
    tx.send(ToWorker::Welcome {
        worker_id: id,
        heartbeat_ms: app.config.heartbeat.as_millis() as u64,
    })
    .expect("receiver alive");
    // A direct connection proves its worker alive with its own messages; a relayed one with
    // its relay's (the relay answers its workers' heartbeats and ends the session of a worker
    // that goes silent, so the coordinator hears one relay instead of each of its workers).
    let link = match &carrier {
        Carrier::Direct => crate::grid::WorkerLink {
            tx,
            heard: Arc::new(crate::grid::Heard::now()),
            hello: hello.order,
        },
        Carrier::Relay(relay) => crate::grid::WorkerLink {
            tx,
            heard: relay.heard.clone(),
            hello: hello.order,
        },
    };
    let heard = link.heard.clone();
    // The grid holds the only sender: when it drops this worker, the outbound task ends and so
    // does this connection.
    let conn = app.worker_connected(id, account.id, record.trust, &hello.caps, link);
    let relay = match &carrier {
        Carrier::Direct => None,
        Carrier::Relay(link) => Some(link.id),
    };
    tracing::info!(worker = id, name = %hello.name, slots = hello.caps.slots, account = %account.name, ?relay, "worker connected");
    let checker = app.signatures.checker();
    let session = Session {
        app,
        id,
        conn,
        key: hello.key,
        carrier,
        heard,
        sent: Sent::default(),
        checker,
    };
    Ok((session, rx))
}

/// Outbound: everything queued for the worker, batched into as few flushes as possible; the
/// digest of each assignment is noted in `sent` before it goes.
async fn send_queued<S>(mut sink: S, mut rx: mpsc::UnboundedReceiver<ToWorker>, sent: Sent)
where
    S: Sink<ToWorker> + Unpin,
{
    let note = |m: &ToWorker| {
        if let ToWorker::Assign(a) = m {
            lock(&sent).insert(a.attempt, assign_digest(a));
        }
    };
    while let Some(first) = rx.recv().await {
        note(&first);
        if sink.feed(first).await.is_err() {
            return;
        }
        while let Ok(m) = rx.try_recv() {
            note(&m);
            if sink.feed(m).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    let _ = sink.close().await;
}

impl Session {
    /// One message from the worker.
    fn handle(&self, text: &str) -> Flow {
        let (app, id) = (&self.app, self.id);
        self.heard.touch();
        let msg: ToCoordinator = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => return Flow::End(Loss::Disconnected, format!("malformed message: {e}")),
        };
        match msg {
            ToCoordinator::Heartbeat => {}
            ToCoordinator::Blobs { held } => app.worker_blobs(id, self.conn, held),
            ToCoordinator::Leaving { reason } => {
                tracing::info!(worker = id, %reason, "worker is leaving");
                return Flow::End(Loss::Left, format!("worker left: {reason}"));
            }
            ToCoordinator::Output { attempt, data } => app.on_output(id, attempt, &data),
            // Checked here, on this connection's task, so verification runs in parallel
            // across workers and outside the grid lock.
            ToCoordinator::Result(r) => {
                let Some(assign) = lock(&self.sent).remove(&r.attempt) else {
                    // Never assigned on this connection (or answered already): the grid would
                    // not take it either.
                    tracing::debug!(
                        worker = id,
                        attempt = r.attempt,
                        "result of an attempt not assigned here: ignored"
                    );
                    return Flow::Continue;
                };
                return self.on_result(assign, r);
            }
            ToCoordinator::Failed {
                attempt,
                reason,
                kind,
                signature,
            } => {
                let Some(assign) = lock(&self.sent).remove(&attempt) else {
                    tracing::debug!(
                        worker = id,
                        attempt,
                        "failure of an attempt not assigned here: ignored"
                    );
                    return Flow::Continue;
                };
                match check_failure(&self.key, &assign, attempt, &reason, kind, &signature) {
                    Ok(()) => app.on_failed(id, attempt, Loss::Failed(kind), &reason),
                    // An honest relay checks every failure before forwarding it: one that
                    // fails here is the relay's doing (a forgery in the worker's name).
                    Err(fault) if let Carrier::Relay(link) = &self.carrier => {
                        return link.altered(app, id, attempt, fault);
                    }
                    Err(fault) => {
                        tracing::warn!(worker = id, attempt, why = %fault, "failure rejected");
                        app.on_failed(id, attempt, Loss::Failed(None), fault.as_str());
                    }
                }
            }
            ToCoordinator::NeedProgram { sha256 } => self.send_program(sha256),
            ToCoordinator::Hello { .. } => {
                return Flow::End(
                    Loss::Disconnected,
                    "second hello on one connection".to_string(),
                );
            }
        }
        Flow::Continue
    }

    /// A result, checked against the digest of the assignment this connection sent (by the
    /// message loop: `Flow::Check`).
    fn on_result(&self, assign: AssignDigest, r: runegrid_proto::worker::AttemptResult) -> Flow {
        Flow::Check(Box::new(Claim { assign, result: r }))
    }

    /// A result once checked.
    fn on_checked(
        &self,
        r: runegrid_proto::worker::AttemptResult,
        checked: Result<(), ResultFault>,
    ) -> Flow {
        let (app, id) = (&self.app, self.id);
        match checked {
            Err(fault) if let Carrier::Relay(link) = &self.carrier => {
                return link.altered(app, id, r.attempt, fault);
            }
            Ok(()) => {
                if let Err(e) = store_outputs(&app.blobs, &r.files) {
                    // The coordinator's fault, not the worker's: the attempt is lost.
                    tracing::error!(worker = id, attempt = r.attempt, error = %e, "cannot keep output files");
                    app.on_failed(
                        id,
                        r.attempt,
                        Loss::Unkept,
                        "the coordinator cannot keep the output files",
                    );
                } else {
                    app.on_result(id, r);
                }
            }
            Err(fault) => {
                tracing::warn!(worker = id, attempt = r.attempt, why = %fault, "result rejected");
                // No kind: a rejected result counts against its worker.
                app.on_failed(id, r.attempt, Loss::Failed(None), fault.as_str());
            }
        }
        Flow::Continue
    }

    /// The program of an attempt the worker holds.
    fn send_program(&self, sha256: String) {
        match self.app.program_for(self.id, &sha256) {
            Some(p) => self.app.send(
                self.id,
                self.conn,
                ToWorker::Program {
                    sha256,
                    module: p.module.clone(),
                },
            ),
            None => tracing::warn!(
                worker = self.id,
                %sha256,
                "worker asked for a program of no attempt it holds"
            ),
        }
    }
}

/// Keeps a checked result's output files in the blob store (by SHA-256, so replicas' identical
/// files are stored once), before the grid may accept it. The writes (and their fsync) block:
/// on a multi-threaded runtime they tell it so, and the connection's other work moves on.
fn store_outputs(
    blobs: &crate::blobs::BlobStore,
    files: &[runegrid_proto::worker::ResultFile],
) -> Result<(), crate::blobs::BlobError> {
    if files.is_empty() {
        return Ok(());
    }
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| write_outputs(blobs, files))
        }
        _ => write_outputs(blobs, files),
    }
}

fn write_outputs(
    blobs: &crate::blobs::BlobStore,
    files: &[runegrid_proto::worker::ResultFile],
) -> Result<(), crate::blobs::BlobError> {
    for f in files {
        // An empty file needs no blob (the store keeps none); its route answers no bytes.
        if f.data.is_empty() || blobs.size(&f.file.sha256).is_some() {
            continue;
        }
        let mut up = blobs.upload()?;
        up.write(&f.data)?;
        up.finish(Some(&f.file.sha256))?;
    }
    Ok(())
}

fn check_hello(text: &str, nonce: &str) -> Result<(VerifyingKey, String, Capabilities), String> {
    let msg: ToCoordinator =
        serde_json::from_str(text).map_err(|e| format!("malformed hello: {e}"))?;
    let ToCoordinator::Hello {
        protocol,
        public_key,
        signature,
        name,
        capabilities,
    } = msg
    else {
        return Err("expected hello".into());
    };
    if protocol != PROTOCOL_VERSION {
        return Err(format!(
            "unsupported worker protocol {protocol}: this coordinator speaks version {PROTOCOL_VERSION} (upgrade the worker; a browser reloads the contribute page)"
        ));
    }
    let key_bytes: [u8; 32] = hex::decode(&public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("public key must be 32 bytes in hex")?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|e| format!("bad public key: {e}"))?;
    let sig = hex::decode(&signature)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or("signature must be 64 bytes in hex")?;
    key.verify(&hello_message(nonce), &sig)
        .map_err(|_| "hello signature does not match the key".to_string())?;
    if capabilities.slots == 0 || capabilities.slots > 1024 {
        return Err(format!(
            "slots must be between 1 and 1024, got {}",
            capabilities.slots
        ));
    }
    let name = if name.trim().is_empty() {
        format!("worker-{}", &public_key[..8])
    } else {
        name
    };
    Ok((key, name, capabilities))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::check_hello;
    use ed25519_dalek::Signer as _;
    use runegrid_proto::worker::{Capabilities, ToCoordinator, hello_message};

    fn hello(protocol: u32) -> String {
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        serde_json::to_string(&ToCoordinator::Hello {
            protocol,
            public_key: hex::encode(key.verifying_key().as_bytes()),
            signature: hex::encode(key.sign(&hello_message("n")).to_bytes()),
            name: "w".into(),
            capabilities: Capabilities {
                cores: 1,
                memory_bytes: 1 << 30,
                slots: 1,
                arch: "x86_64".into(),
                os: "linux".into(),
                runtime: "test".into(),
                blob_space: 0,
                blobs: vec![],
                gpu: None,
            },
        })
        .unwrap()
    }

    /// Workers that sign no failures (protocol 2) are refused at their hello, saying why.
    #[test]
    fn an_older_worker_is_refused_at_its_hello() {
        assert!(check_hello(&hello(runegrid_proto::PROTOCOL_VERSION), "n").is_ok());
        let why = check_hello(&hello(2), "n").unwrap_err();
        assert!(
            why.contains("unsupported worker protocol 2") && why.contains("upgrade the worker"),
            "{why}"
        );
    }
}
