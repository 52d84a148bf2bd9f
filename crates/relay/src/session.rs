//! One worker's WebSocket (`GET /v1/worker` on the relay, the token as a bearer or `?token=`
//! for browsers): a session of the upstream connection. The worker's messages go upstream as
//! they are, except that heartbeats end here (the relay keeps its workers' liveness: a worker
//! silent for three heartbeat intervals has its session ended), that `need_program` is
//! answered from the program cache when it can be, and that every result and every failure is
//! checked against the worker's key first: one that fails is the worker's doing, and ends its
//! session here instead of being forwarded (the coordinator holds the relay responsible for
//! every result and failure it forwards).

use crate::{Hub, Misbehaviour, lock};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ed25519_dalek::VerifyingKey;
use futures_util::{SinkExt, StreamExt};
use runegrid_core::AttemptId;
use runegrid_proto::relay::{Frame, SessionId};
use runegrid_proto::worker::{
    Assign, AssignDigest, AttemptResult, ResultFault, ToCoordinator, assign_digest, check_failure,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Heartbeat intervals a worker may miss before the relay ends its session (as the
/// coordinator does with a direct connection).
const SILENT_AFTER_BEATS: u32 = 3;
/// How long a worker may stay silent before its welcome told the interval.
const SILENT_BEFORE_WELCOME: Duration = Duration::from_secs(60);

/// The largest message a worker may send (results carry stdout).
const MAX_MESSAGE: usize = 200 << 20;
/// Each worker's read buffer: small, as most messages are (it grows for a larger one);
/// tungstenite's default, 128 KiB allocated at the upgrade, would make 10,000 idle workers
/// cost the relay over a GiB.
const READ_BUFFER: usize = 4 << 10;

/// What goes to a worker.
pub(crate) enum WorkerOut {
    /// A message's text.
    Text(Utf8Bytes),
    /// The session ended upstream: close the WebSocket.
    Close(String),
}

/// A worker session, as the relay's parts share it.
pub(crate) struct SessionState {
    pub id: SessionId,
    /// The token the worker connected with.
    pub token: String,
    pub to_worker: mpsc::UnboundedSender<WorkerOut>,
    /// Programs of the attempts the coordinator assigned this worker: the only ones the cache
    /// answers it with (as the coordinator sends a worker only the programs of its attempts).
    programs: Mutex<HashSet<String>>,
    /// The digest of every assignment forwarded to the worker and not yet answered: the
    /// worker's result must sign it.
    assigns: Mutex<HashMap<AttemptId, AssignDigest>>,
    /// The heartbeat interval the coordinator's welcome gave the worker, in ms (0 before it).
    pub heartbeat_ms: AtomicU64,
}

impl SessionState {
    /// An assignment forwarded to the worker, as forwarded.
    pub fn assigned(&self, a: &Assign) {
        lock(&self.assigns).insert(a.attempt, assign_digest(a));
        let mut p = lock(&self.programs);
        if !p.contains(&a.program) {
            p.insert(a.program.clone());
        }
    }

    fn holds(&self, program: &str) -> bool {
        lock(&self.programs).contains(program)
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct WorkerQuery {
    token: Option<String>,
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"error": {"code": code, "message": message}}).to_string(),
    )
        .into_response()
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(t.trim().to_string())
}

pub(crate) async fn upgrade(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<WorkerQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(token) = bearer(&headers).or(q.token) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing api token: send Authorization: Bearer TOKEN",
        );
    };
    if !hub.upstream_up() {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the relay has no connection to the coordinator now: dial again later",
        );
    }
    ws.max_message_size(MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| serve(hub, token, socket))
}

/// How a session ended.
enum End {
    /// The worker's side ended (or the relay ended it): tell the coordinator why.
    Here(String),
    /// The coordinator ended it.
    Upstream(String),
}

async fn serve(hub: Arc<Hub>, token: String, socket: WebSocket) {
    let id = hub.next_session.fetch_add(1, Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let state = Arc::new(SessionState {
        id,
        token: token.clone(),
        to_worker: tx,
        programs: Mutex::new(HashSet::new()),
        assigns: Mutex::new(HashMap::new()),
        heartbeat_ms: AtomicU64::new(0),
    });
    lock(&hub.sessions).insert(id, state.clone());
    if !hub.send_upstream(Frame::Open { session: id, token }) {
        lock(&hub.sessions).remove(&id);
        return;
    }
    hub.stats.sessions_opened.fetch_add(1, Relaxed);
    tracing::debug!(session = id, "worker connected");
    let (mut sink, mut stream) = socket.split();
    let checker = hub.signatures.checker();
    let mut key: Option<VerifyingKey> = None;
    let mut heard = Instant::now();
    let silence = tokio::time::sleep(SILENT_BEFORE_WELCOME);
    tokio::pin!(silence);
    let end = loop {
        tokio::select! {
            // The worker's messages first: on a starved relay the silence timer and buffered
            // heartbeats are ready together, and the heartbeats must win.
            biased;
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    heard = Instant::now();
                    silence.as_mut().reset(heard + silent_after(&state));
                    let mut step = on_message(&hub, &state, &mut key, t);
                    if let Ok(Step::Check(claim)) = step {
                        let Claim { key, assign, result, text } = *claim;
                        let verdict = checker.check_result(key, &assign, &result).await;
                        step = checked(&hub, &state, result, text, verdict).map(|()| Step::Done);
                    }
                    if let Err(why) = step {
                        let _ = sink.send(Message::Close(None)).await;
                        break End::Here(why);
                    }
                }
                Some(Ok(Message::Close(_))) | None => break End::Here("the worker closed the connection".into()),
                Some(Err(e)) => break End::Here(format!("connection error: {e}")),
                Some(Ok(_)) => {}
            },
            out = rx.recv() => match out {
                Some(WorkerOut::Text(t)) => {
                    let mut ok = sink.feed(Message::Text(t)).await.is_ok();
                    // What else is queued goes in the same flush; a close queued behind the
                    // messages ends the session after them (it must not be lost: a session
                    // the upstream's end did not close would stay open for ever).
                    let mut closed = None;
                    while ok && closed.is_none() {
                        match rx.try_recv() {
                            Ok(WorkerOut::Text(t)) => ok = sink.feed(Message::Text(t)).await.is_ok(),
                            Ok(WorkerOut::Close(why)) => closed = Some(why),
                            Err(_) => break,
                        }
                    }
                    if !ok || sink.flush().await.is_err() {
                        break End::Here("cannot write to the worker".into());
                    }
                    if let Some(why) = closed {
                        let _ = sink.send(Message::Close(None)).await;
                        break End::Upstream(why);
                    }
                }
                Some(WorkerOut::Close(why)) => {
                    let _ = sink.send(Message::Close(None)).await;
                    break End::Upstream(why);
                }
                None => break End::Upstream("the session was dropped".into()),
            },
            () = &mut silence => {
                let limit = silent_after(&state);
                if heard.elapsed() >= limit {
                    hub.stats.silent_workers.fetch_add(1, Relaxed);
                    let _ = sink.send(Message::Close(None)).await;
                    break End::Here(format!(
                        "the worker went silent: nothing from it for {} ms",
                        limit.as_millis()
                    ));
                }
                silence.as_mut().reset(heard + limit);
            }
        }
    };
    lock(&hub.sessions).remove(&id);
    match end {
        End::Here(reason) => {
            tracing::debug!(session = id, %reason, "worker session ended");
            hub.send_upstream(Frame::Close {
                session: id,
                reason,
            });
        }
        End::Upstream(reason) => {
            tracing::debug!(session = id, %reason, "worker session ended upstream");
        }
    }
    crate::programs::abandon(&hub, id);
}

/// How long the worker may stay silent: three heartbeat intervals once its welcome told them.
fn silent_after(state: &SessionState) -> Duration {
    match state.heartbeat_ms.load(Relaxed) {
        0 => SILENT_BEFORE_WELCOME,
        ms => Duration::from_millis(ms) * SILENT_AFTER_BEATS,
    }
}

/// What is left to do with a worker's message.
enum Step {
    Done,
    /// A result to check (its signature in a batch with other sessions') before it is
    /// forwarded and the session's next message read.
    Check(Box<Claim>),
}

/// A result as the worker sent it, with what it is checked against.
struct Claim {
    key: VerifyingKey,
    assign: AssignDigest,
    result: AttemptResult,
    text: Utf8Bytes,
}

/// One message from the worker: forwarded, answered here, a result to check, or the end of the
/// session (why).
fn on_message(
    hub: &Hub,
    state: &SessionState,
    key: &mut Option<VerifyingKey>,
    text: Utf8Bytes,
) -> Result<Step, String> {
    let msg: ToCoordinator =
        serde_json::from_str(&text).map_err(|e| format!("malformed message: {e}"))?;
    match msg {
        // Heard (the session loop noted it): the relay's own liveness covers the worker's
        // upstream.
        ToCoordinator::Heartbeat => {
            hub.stats.heartbeats_kept.fetch_add(1, Relaxed);
            return Ok(Step::Done);
        }
        ToCoordinator::Hello { ref public_key, .. } => {
            *key = hex::decode(public_key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| VerifyingKey::from_bytes(&b).ok());
        }
        ToCoordinator::Failed {
            attempt,
            ref reason,
            kind,
            ref signature,
        } => {
            let Some(k) = key else {
                return Err("a failure before the hello".into());
            };
            let Some(assign) = lock(&state.assigns).remove(&attempt) else {
                tracing::debug!(
                    session = state.id,
                    attempt,
                    "failure of an attempt not assigned here: dropped"
                );
                return Ok(Step::Done);
            };
            if let Err(fault) = check_failure(k, &assign, attempt, reason, kind, signature) {
                hub.stats.results_rejected.fetch_add(1, Relaxed);
                tracing::warn!(session = state.id, attempt, why = %fault, "the worker sent a failure that fails its checks: session ended");
                return Err(format!(
                    "the worker sent a failure that fails its checks: {fault}"
                ));
            }
        }
        ToCoordinator::NeedProgram { ref sha256 } if state.holds(sha256) => {
            match crate::programs::ask(hub, state, sha256) {
                crate::programs::Ask::Answered => return Ok(Step::Done),
                crate::programs::Ask::Fetch => {}
            }
        }
        ToCoordinator::Result(r) => {
            let Some(key) = *key else {
                return Err("a result before the hello".into());
            };
            let Some(assign) = lock(&state.assigns).remove(&r.attempt) else {
                // Not assigned through this session (or answered already): the coordinator
                // would not take it either.
                tracing::debug!(
                    session = state.id,
                    attempt = r.attempt,
                    "result of an attempt not assigned here: dropped"
                );
                return Ok(Step::Done);
            };
            return Ok(Step::Check(Box::new(Claim {
                key,
                assign,
                result: r,
                text,
            })));
        }
        _ => {}
    }
    let frame = Frame::message(state.id, text.to_string())
        .map_err(|e| format!("malformed message: {e}"))?;
    forward(hub, state.id, frame).map(|()| Step::Done)
}

/// A result once checked: forwarded as the worker sent it (or, by a relay misbehaving on
/// purpose, something else), or the end of the session (why).
fn checked(
    hub: &Hub,
    state: &SessionState,
    mut r: AttemptResult,
    text: Utf8Bytes,
    verdict: Result<(), ResultFault>,
) -> Result<(), String> {
    if let Err(fault) = verdict {
        hub.stats.results_rejected.fetch_add(1, Relaxed);
        tracing::warn!(session = state.id, attempt = r.attempt, why = %fault, "the worker sent a result that fails its checks: session ended");
        return Err(format!(
            "the worker sent a result that fails its checks: {fault}"
        ));
    }
    if hub.config.misbehaviour == Some(Misbehaviour::ForgeFailure) {
        // The worker's good result replaced by a failure in its name, unsigned.
        hub.stats.failures_forged.fetch_add(1, Relaxed);
        return forward_instead(
            hub,
            state,
            &ToCoordinator::Failed {
                attempt: r.attempt,
                reason: "forged by the relay".into(),
                kind: None,
                signature: String::new(),
            },
        );
    }
    if hub.config.misbehaviour == Some(Misbehaviour::FlipResult) {
        flip(&mut r);
        hub.stats.results_altered.fetch_add(1, Relaxed);
        return forward_instead(hub, state, &ToCoordinator::Result(r));
    }
    let frame = Frame::message(state.id, text.to_string())
        .map_err(|e| format!("malformed message: {e}"))?;
    forward(hub, state.id, frame)
}

/// A misbehaving relay's message in place of the worker's.
fn forward_instead(hub: &Hub, state: &SessionState, msg: &ToCoordinator) -> Result<(), String> {
    let message = serde_json::value::to_raw_value(msg).expect("messages serialize");
    forward(
        hub,
        state.id,
        Frame::Message {
            session: state.id,
            message,
        },
    )
}

fn forward(hub: &Hub, session: SessionId, frame: Frame) -> Result<(), String> {
    if hub.send_upstream(frame) {
        Ok(())
    } else {
        tracing::debug!(session, "upstream down: message dropped");
        Err("the relay lost its connection to the coordinator".into())
    }
}

/// `flip-result`: the result's stdout altered, its digest recomputed to match (only the
/// worker's signature, over the old digest, can tell).
fn flip(r: &mut AttemptResult) {
    match r.stdout.first_mut() {
        Some(b) => *b ^= 1,
        None => r.stdout.push(b'!'),
    }
    let records: Vec<_> = r.files.iter().map(|f| f.file.clone()).collect();
    r.digest = runegrid_core::digest_with_files(&r.status, r.fuel, &r.stdout, &records);
}
