//! Relays: `GET /v1/relay`, one WebSocket from a relay (`runegrid relay`) carrying the
//! connections of the workers connected to it, each a session (`runegrid_proto::relay`).
//!
//! Each session runs `ws::serve`, the code a direct connection runs: its token is authenticated
//! as the worker's own (a relay cannot connect a worker for an account whose token it does not
//! hold), the worker answers the coordinator's own challenge with its key, and every result is
//! checked against that key here. A relay checks each result before forwarding it (an honest
//! relay never forwards one that fails), so a result that fails the check on a relayed session
//! was altered by the relay: the relay's connection is dropped, its attempts and its other
//! sessions' are lost without blame to their workers (`Loss::Relay`),
//! `runegrid_relays_caught_total` counts it, and the relay operator's account may not connect a
//! relay for [`RELAY_BAN`] (a relay that came back at once would lose its workers' attempts
//! again and again, failing tasks for too many lost attempts).
//!
//! Liveness is the relay's: it answers its workers' heartbeats itself (they do not travel
//! upstream) and ends the session of a worker that goes silent, and it sends
//! [`Frame::Alive`] whenever it has sent nothing else for half the heartbeat interval the
//! coordinator's [`Frame::Welcome`] gave it. Every session
//! of a relay shares the relay's record of when it was last heard from, so a coordinator
//! holding 100,000 workers through 10 relays checks 10 heartbeats, and a relay that goes
//! silent loses all its workers at once. A relay could keep a vanished worker alive this way,
//! as it could by forwarding made-up heartbeats before; the worker's attempts still expire
//! with their leases.

use crate::api::{ApiError, account_for_token, authenticate};
use crate::app::App;
use crate::ws::{Carrier, Inbound, MAX_MESSAGE};
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use runegrid_core::{AttemptId, Loss, WorkerId};
use runegrid_proto::relay::{self, Frame, SessionId, decode, encode};
use runegrid_proto::worker::{ResultFault, ToWorker};
use runegrid_store::Account;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// How long a relay operator caught altering a result may not connect a relay.
pub const RELAY_BAN: Duration = Duration::from_secs(600);

/// Relay operators caught altering results: when.
#[derive(Default)]
pub struct Relays {
    caught: Mutex<HashMap<i64, Instant>>,
}

impl Relays {
    fn banned(&self, operator: i64) -> bool {
        let mut caught = self.caught.lock().unwrap_or_else(|e| e.into_inner());
        caught.retain(|_, at| at.elapsed() < RELAY_BAN);
        caught.contains_key(&operator)
    }

    fn ban(&self, operator: i64) {
        self.caught
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(operator, Instant::now());
    }
}

/// A relay's connection, as its sessions see it.
pub(crate) struct RelayLink {
    /// This connection's number (since the coordinator started).
    pub id: u64,
    /// The relay operator's account.
    pub operator: String,
    operator_id: i64,
    /// Told when a session caught the relay altering a result.
    caught: Notify,
    /// When the relay was last heard from: the record every session of it shares (the relay
    /// keeps its workers' liveness itself, see the module's docs).
    pub heard: Arc<crate::grid::Heard>,
}

impl RelayLink {
    /// A result or a failure on one of this relay's sessions failed its checks: the relay
    /// altered or forged it (an honest relay checks both before forwarding them). The attempt
    /// is lost without blame to the worker, the relay's connection is dropped.
    pub(crate) fn altered(
        &self,
        app: &App,
        worker: WorkerId,
        attempt: AttemptId,
        fault: ResultFault,
    ) -> crate::ws::Flow {
        tracing::warn!(relay = self.id, operator = %self.operator, worker, attempt, why = %fault, "relay forwarded a result or failure its worker did not sign: dropping the relay");
        app.relays.ban(self.operator_id);
        app.config.metrics.relay_caught();
        let why = format!(
            "relay {} forwarded what its worker did not sign: {fault}",
            self.id
        );
        app.on_failed(worker, attempt, Loss::Relay, &why);
        self.caught.notify_one();
        crate::ws::Flow::End(Loss::Relay, why)
    }
}

/// The relay protocol: a WebSocket upgrade with the relay operator's token; arrays of
/// `runegrid_proto::relay::Frame` both ways.
#[utoipa::path(get, path = "/v1/relay", tag = "workers", security(("token" = [])),
    responses((status = 101, description = "switching to the relay protocol's WebSocket"),
        (status = 400, description = "invalid_request: not a WebSocket upgrade", body = runegrid_proto::ErrorBody),
        (status = 401, description = "unauthorized", body = runegrid_proto::ErrorBody),
        (status = 403, description = "relay_banned: a relay of this account was caught altering a result", body = runegrid_proto::ErrorBody)))]
pub async fn upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let operator = authenticate(&app, &headers).await?;
    if app.relays.banned(operator.id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "relay_banned",
            format!(
                "a relay of account {} was caught altering a result: no relay of it is accepted for {} s",
                operator.name,
                RELAY_BAN.as_secs()
            ),
        ));
    }
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(app, operator, socket)))
}

static NEXT_RELAY: AtomicU64 = AtomicU64::new(1);

/// One relay connection: frames in, dispatched to their sessions; sessions' messages out.
async fn serve(app: Arc<App>, operator: Account, socket: WebSocket) {
    let _open = app.config.metrics.open(crate::metrics::Stream::Relay);
    let link = Arc::new(RelayLink {
        id: NEXT_RELAY.fetch_add(1, Ordering::Relaxed),
        operator: operator.name,
        operator_id: operator.id,
        caught: Notify::new(),
        heard: Arc::new(crate::grid::Heard::now()),
    });
    tracing::info!(relay = link.id, operator = %link.operator, "relay connected");
    let (sink, mut stream) = socket.split();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Frame>();
    let _ = out_tx.send(Frame::Welcome {
        heartbeat_ms: app.config.heartbeat.as_millis() as u64,
    });
    let mut writer = tokio::spawn(write_frames(sink, out_rx));
    let mut sessions: HashMap<SessionId, mpsc::UnboundedSender<Inbound>> = HashMap::new();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<SessionId>();
    let (loss, why) = loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    link.heard.touch();
                    match decode(&t) {
                        Ok(frames) => {
                            for f in frames {
                                on_frame(&app, &link, &mut sessions, &out_tx, &ended_tx, f);
                            }
                        }
                        Err(e) => break (Loss::Disconnected, format!("malformed frames: {e}")),
                    }
                }
                Some(Ok(Message::Close(_))) | None => break (Loss::Disconnected, "relay closed the connection".to_string()),
                Some(Err(e)) => break (Loss::Disconnected, format!("relay connection error: {e}")),
                Some(Ok(_)) => {}
            },
            Some(s) = ended_rx.recv() => {
                sessions.remove(&s);
            }
            () = link.caught.notified() => break (Loss::Relay, format!("relay {} was caught altering a result", link.id)),
            _ = &mut writer => break (Loss::Disconnected, "relay connection failed".to_string()),
        }
    };
    if loss == Loss::Relay {
        tracing::warn!(relay = link.id, operator = %link.operator, sessions = sessions.len(), "relay dropped");
    } else {
        tracing::info!(relay = link.id, reason = %why, sessions = sessions.len(), "relay disconnected");
    }
    for (_, tx) in sessions.drain() {
        let _ = tx.send(Err((loss, why.clone())));
    }
    writer.abort();
}

/// One frame from the relay.
fn on_frame(
    app: &Arc<App>,
    link: &Arc<RelayLink>,
    sessions: &mut HashMap<SessionId, mpsc::UnboundedSender<Inbound>>,
    out: &mpsc::UnboundedSender<Frame>,
    ended: &mpsc::UnboundedSender<SessionId>,
    frame: Frame,
) {
    match frame {
        Frame::Open { session, token } => {
            if sessions.contains_key(&session) {
                tracing::warn!(relay = link.id, session, "relay opened a session twice");
                return;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            sessions.insert(session, tx);
            tokio::spawn(run_session(
                app.clone(),
                link.clone(),
                session,
                token,
                rx,
                out.clone(),
                ended.clone(),
            ));
        }
        Frame::Message { session, message } => {
            if let Some(tx) = sessions.get(&session) {
                let text: Box<str> = message.into();
                let _ = tx.send(Ok(Utf8Bytes::from(String::from(text))));
            }
        }
        Frame::Close { session, reason } => {
            if let Some(tx) = sessions.remove(&session) {
                let _ = tx.send(Err((
                    Loss::Disconnected,
                    format!("the worker left the relay: {reason}"),
                )));
            }
        }
        // Heard already: the relay is alive, and so are the workers it holds sessions for.
        Frame::Alive => {}
        Frame::Welcome { .. } => {
            tracing::warn!(relay = link.id, "relay sent a welcome frame: ignored");
        }
    }
}

/// One session: the worker's token authenticated, then `ws::serve` over the session's frames.
async fn run_session(
    app: Arc<App>,
    link: Arc<RelayLink>,
    session: SessionId,
    token: String,
    rx: mpsc::UnboundedReceiver<Inbound>,
    out: mpsc::UnboundedSender<Frame>,
    ended: mpsc::UnboundedSender<SessionId>,
) {
    let reason = match account_for_token(&app, token).await {
        Err(e) => {
            tracing::info!(relay = link.id, session, error = %e.message, "relayed worker refused");
            e.message
        }
        Ok(account) => {
            let to_relay = out.clone();
            let sink = futures_util::sink::unfold(to_relay, move |out, m: ToWorker| async move {
                let message = serde_json::value::to_raw_value(&m).expect("messages serialize");
                out.send(Frame::Message { session, message })
                    .map_err(|_| "the relay's connection is gone")?;
                Ok::<_, &'static str>(out)
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|m| (m, rx))
            });
            match crate::ws::serve(
                app,
                account,
                Box::pin(sink),
                Box::pin(stream),
                Carrier::Relay(link.clone()),
            )
            .await
            {
                Ok(()) => "the coordinator ended the connection".to_string(),
                Err(e) => e,
            }
        }
    };
    let _ = out.send(Frame::Close { session, reason });
    let _ = ended.send(session);
}

/// Outbound: frames queued for the relay, as many as are waiting in one message.
async fn write_frames(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::UnboundedReceiver<Frame>,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        relay::batch(&mut batch, first, || rx.try_recv().ok());
        let text = encode(&batch);
        batch.clear();
        if sink.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
}
