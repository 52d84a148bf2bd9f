//! The relay's one connection to the coordinator: dialled, served, dialled again with the
//! native worker's backoff. When it drops, every worker session ends (the workers dial the
//! relay again, and are turned away until the connection is back).
//!
//! Given several coordinators (one active, the others standing by on one database), the relay
//! follows a failover as workers do: a standby refuses the dial naming the active coordinator,
//! which is dialled next when it is one of the list (else the next one given); a connection
//! that fails or drops moves on through the list with the backoff. The relay's HTTP requests
//! (proxy, blobs) go to the coordinator it is connected to.

use crate::session::WorkerOut;
use crate::{Hub, RelayError, lock};
use futures_util::{SinkExt, StreamExt};
use runegrid_proto::failover::{ACTIVE_HEADER, Coordinators, standby_hint};
use runegrid_proto::relay::{self, Frame, decode, encode};
use runegrid_proto::worker::ToWorker;
use runegrid_worker::Backoff;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// The largest message either side sends (a program travels in one).
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// `http://HOST:PORT` for a base URL given as `http(s)://` or `ws(s)://`.
pub(crate) fn http_base(url: &str) -> Result<String, RelayError> {
    let base = url.trim_end_matches('/');
    for (from, to) in [
        ("http://", "http://"),
        ("https://", "https://"),
        ("ws://", "http://"),
        ("wss://", "https://"),
    ] {
        if let Some(rest) = base.strip_prefix(from) {
            return Ok(format!("{to}{rest}"));
        }
    }
    Err(RelayError::Url {
        url: url.into(),
        message: "expected http://HOST:PORT".into(),
    })
}

/// The coordinators of an `--upstream` value (`URL1,URL2,...`), as `http(s)://` bases.
pub(crate) fn coordinators(spec: &str) -> Result<Coordinators, RelayError> {
    let given = Coordinators::parse(spec).ok_or_else(|| RelayError::Url {
        url: spec.into(),
        message: "no coordinator url given".into(),
    })?;
    let bases = given
        .urls()
        .iter()
        .map(|u| http_base(u))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Coordinators::parse(&bases.join(",")).expect("not empty"))
}

/// The relay WebSocket's URL for the coordinator's `http(s)://` base.
fn ws_url(base: &str) -> String {
    let rest = base
        .strip_prefix("http://")
        .map(|r| format!("ws://{r}"))
        .or_else(|| base.strip_prefix("https://").map(|r| format!("wss://{r}")))
        .unwrap_or_else(|| base.to_string());
    format!("{rest}/v1/relay")
}

/// Keeps the upstream connection up for as long as the relay runs.
pub(crate) async fn run(hub: Arc<Hub>, mut coordinators: Coordinators) {
    let mut backoff = Backoff::new();
    // Whether the last dial went straight to the coordinator a standby named: the next one
    // waits its backoff, so that standbys naming each other (a stale hint) cannot spin.
    let mut followed = false;
    loop {
        let base = coordinators.current().to_string();
        let url = ws_url(&base);
        let mut named = false;
        match dial(&url, &hub.config.token).await {
            Ok(ws) => {
                backoff.reset();
                hub.set_base(&base);
                hub.stats.upstream_connects.fetch_add(1, Relaxed);
                tracing::info!(%url, "connected upstream");
                let why = serve(&hub, ws).await;
                tracing::warn!(%why, "upstream connection ended; reconnecting");
            }
            Err(Refused::Standby(hint)) => {
                tracing::warn!(%url, active = hint.as_deref().unwrap_or("none yet"), "the coordinator is standing by");
                named = coordinators.next(hint.as_deref());
            }
            Err(Refused::Other(e)) => {
                tracing::warn!(%url, error = %e, "cannot reach the coordinator");
                coordinators.next(None);
            }
        }
        close_all(&hub, "the relay lost its connection to the coordinator");
        if named && !followed {
            // Straight there: the standby said where to go.
            followed = true;
            continue;
        }
        followed = false;
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Why a dial failed.
enum Refused {
    /// A standby refused it, naming the active coordinator (when one is).
    Standby(Option<String>),
    Other(String),
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn dial(url: &str, token: &str) -> Result<Socket, Refused> {
    let mut req = url
        .into_client_request()
        .map_err(|e| Refused::Other(e.to_string()))?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| Refused::Other("the api token has invalid characters".into()))?,
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    match tokio_tungstenite::connect_async_with_config(req, Some(config), true).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let active = resp.headers().get(ACTIVE_HEADER).map(|v| v.as_bytes());
            if let Some(hint) = standby_hint(resp.status().as_u16(), active) {
                return Err(Refused::Standby(hint));
            }
            Err(Refused::Other(format!(
                "{}: {}",
                resp.status(),
                resp.body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default()
            )))
        }
        Err(e) => Err(Refused::Other(e.to_string())),
    }
}

/// Ends every worker session (the upstream connection is gone).
fn close_all(hub: &Hub, why: &str) {
    *lock(&hub.upstream) = None;
    let sessions: Vec<_> = lock(&hub.sessions).drain().collect();
    for (_, s) in sessions {
        let _ = s.to_worker.send(WorkerOut::Close(why.to_string()));
    }
    hub.programs.clear_pending();
}

/// One upstream connection, until it ends; returns why it ended.
async fn serve(hub: &Arc<Hub>, ws: Socket) -> String {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    *lock(&hub.upstream) = Some(tx);
    let writer_hub = hub.clone();
    let mut writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        loop {
            // Nothing to send for a heartbeat interval: say the relay is alive.
            let first = match tokio::time::timeout(keepalive(&writer_hub), rx.recv()).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => Frame::Alive,
            };
            relay::batch(&mut batch, first, || rx.try_recv().ok());
            let stats = &writer_hub.stats;
            stats.upstream_messages_sent.fetch_add(1, Relaxed);
            stats
                .upstream_frames_sent
                .fetch_add(batch.len() as u64, Relaxed);
            let text = encode(&batch);
            stats
                .upstream_bytes_sent
                .fetch_add(text.len() as u64, Relaxed);
            batch.clear();
            if let Err(e) = sink.send(Message::Text(text.into())).await {
                return format!("cannot send upstream: {e}");
            }
        }
        "upstream sender dropped".to_string()
    });
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let stats = &hub.stats;
                    stats.upstream_messages_received.fetch_add(1, Relaxed);
                    stats.upstream_bytes_received.fetch_add(t.len() as u64, Relaxed);
                    match decode(&t) {
                        Ok(frames) => {
                            stats.upstream_frames_received.fetch_add(frames.len() as u64, Relaxed);
                            for f in frames {
                                on_frame(hub, f);
                            }
                        }
                        Err(e) => {
                            writer.abort();
                            return format!("malformed frames from the coordinator: {e}");
                        }
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    writer.abort();
                    return format!("the coordinator closed the connection ({c:?})");
                }
                None => {
                    writer.abort();
                    return "the coordinator closed the connection".to_string();
                }
                Some(Err(e)) => {
                    writer.abort();
                    return format!("connection error: {e}");
                }
                Some(Ok(_)) => {}
            },
            r = &mut writer => return r.unwrap_or_else(|e| e.to_string()),
        }
    }
}

/// How long the upstream connection may go without a message: half the coordinator's
/// heartbeat interval (50 ms, the shortest a coordinator asks, until its welcome told it).
fn keepalive(hub: &Hub) -> std::time::Duration {
    std::time::Duration::from_millis(hub.heartbeat_ms.load(Relaxed).max(100) / 2)
}

/// One frame from the coordinator.
fn on_frame(hub: &Arc<Hub>, frame: Frame) {
    match frame {
        Frame::Message { session, message } => {
            let Some(s) = hub.session(session) else {
                return;
            };
            let text: Box<str> = message.into();
            let mut text = String::from(text);
            match serde_json::from_str::<ToWorker>(&text) {
                Ok(ToWorker::Assign(mut a)) => {
                    if hub.config.misbehaviour == Some(crate::Misbehaviour::AlterInput) {
                        a.seed = a.seed.wrapping_add(1);
                        hub.stats.inputs_altered.fetch_add(1, Relaxed);
                        text = serde_json::to_string(&ToWorker::Assign(a.clone()))
                            .expect("messages serialize");
                    }
                    s.assigned(&a);
                    if !a.blobs.is_empty() {
                        let mut sizes = lock(&hub.blob_sizes);
                        for b in &a.blobs {
                            sizes.insert(b.sha256.clone(), b.size);
                        }
                    }
                }
                Ok(ToWorker::Program { sha256, module }) => {
                    crate::programs::arrived(hub, session, sha256, &module, text);
                    return;
                }
                Ok(ToWorker::Welcome { heartbeat_ms, .. }) => {
                    s.heartbeat_ms.store(heartbeat_ms, Relaxed);
                }
                _ => {}
            }
            let _ = s.to_worker.send(WorkerOut::Text(text.into()));
        }
        Frame::Close { session, reason } => {
            if let Some(s) = lock(&hub.sessions).remove(&session) {
                let _ = s.to_worker.send(WorkerOut::Close(reason));
            }
        }
        Frame::Open { session, .. } => {
            tracing::warn!(session, "the coordinator sent an open frame: ignored");
        }
        Frame::Welcome { heartbeat_ms } => hub.heartbeat_ms.store(heartbeat_ms, Relaxed),
        Frame::Alive => {}
    }
}
